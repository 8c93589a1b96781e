"""Loopback RTSP test infrastructure: the real GStreamer server as a subprocess, and network faults.

- ``RtspServer``: starts ``tests/rtsp_server.py`` under the system python (which has GStreamer's ``gi``
  bindings), waits for its ``READY <port>`` line, and can ``kill()`` and ``restart()`` it on the same port.
- ``FaultProxy``: a TCP proxy between an RTSP client and the server that can flip bytes inside the RTP
  payloads of the interleaved data (never in the RTSP text) and can drop every connection it carries.
- ``BlackHole``: a TCP server that accepts connections and never answers.

``rtsp_server_unavailable()`` says why the server cannot run here (None when it can); the tests skip with it.
"""
from __future__ import annotations

import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
READY_TIMEOUT_S = 20.0


def rtsp_server_unavailable() -> str | None:
    """Why the GStreamer RTSP server cannot run on this machine, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (GStreamer's RTSP server runs under the system python)"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [n for n in ('videotestsrc', 'x264enc', 'rtph264pay', 'videoconvert') "
             "if Gst.ElementFactory.find(n) is None]; print(' '.join(missing))")
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{SYSTEM_PYTHON} could not run: {error}"
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return (f"{SYSTEM_PYTHON} lacks GStreamer's RTSP server bindings ({last_line}); "
                "apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly ...")
    if result.stdout.strip():
        return f"GStreamer elements missing: {result.stdout.strip()}"
    return None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RtspServer:
    """tests/rtsp_server.py in a subprocess; ``url(i)`` is mount /cam{i}. Use as a context manager."""

    def __init__(self, streams: int = 1, size: str = "320x180", fps: int = 15, port: int | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.port = port if port is not None else free_port()
        self._args = ["--streams", str(streams), "--size", size, "--fps", str(fps), *extra_args]
        self._process: subprocess.Popen | None = None
        # The server's stderr goes to a file, not a pipe: a pipe nobody reads would block a chatty server.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.start()

    def url(self, stream: int = 0) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam{stream}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server on ``self.port`` and wait until it serves."""
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), *self._args]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        line = _read_line_within(self._process, READY_TIMEOUT_S)
        if not line.startswith("READY "):
            self.kill()
            self._stderr.seek(0)
            stderr = self._stderr.read()
            raise RuntimeError(f"RTSP server did not become ready within {READY_TIMEOUT_S:.0f} s "
                               f"(exit code {self._process.returncode}); stdout: {line!r}; stderr: {stderr[-2000:]}")

    def kill(self) -> None:
        """Stop the server at once (SIGKILL): clients see their connections end."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def restart(self, down_for_s: float = 0.0) -> None:
        """Kill, stay down ``down_for_s`` seconds, start again on the same port."""
        self.kill()
        time.sleep(down_for_s)
        self.start()

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._process is not None and self._process.stdout:
            self._process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _read_line_within(process: subprocess.Popen, timeout_s: float) -> str:
    """The first stdout line of ``process``, or "" when none comes in time or it exits first."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return lines[0].strip() if lines else ""


RTP_HEADER_BYTES = 12
INTERLEAVED_HEADER_BYTES = 4  # '$', channel, 16-bit length


class FaultProxy:
    """A loopback TCP proxy for RTSP over TCP (interleaved RTP) with injectable faults.

    ``corrupt_fraction``: share of RTP packets on channel 0 (the first SETUP's RTP channel, i.e. video)
    in which ``bytes_per_packet`` payload bytes are flipped; the RTP header and the first two payload bytes
    (H.264 NAL / fragmentation header) stay intact so the damage reaches the decoder. It can be changed while
    running. ``drop_connections()`` closes every connection the proxy carries; ``stall()`` stops passing the
    server's bytes on (the connection stays open, the client hears nothing) until ``resume()``.
    """

    def __init__(self, upstream_port: int, corrupt_fraction: float = 0.0, bytes_per_packet: int = 8,
                 seed: int = 1):
        self.upstream_port = upstream_port
        self.corrupt_fraction = corrupt_fraction
        self.bytes_per_packet = bytes_per_packet
        self.corrupted_packets = 0
        self.rtp_packets = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._stalled = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, name="fault-proxy-accept", daemon=True).start()

    def url(self, stream: int = 0) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam{stream}"

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump_verbatim, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump_from_server, args=(server, client), daemon=True).start()

    def _pump_verbatim(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        self._close_pair(source, target)

    def _pump_from_server(self, server: socket.socket, client: socket.socket) -> None:
        """Split the server's bytes into RTSP messages and interleaved packets; damage only RTP payloads."""
        buffer = bytearray()
        try:
            while True:
                while self._stalled.is_set() and not self._closed:
                    time.sleep(0.02)
                data = server.recv(65536)
                if not data:
                    break
                buffer += data
                while (message_end := self._next_message_end(buffer)) is not None:
                    message = bytes(buffer[:message_end])
                    del buffer[:message_end]
                    client.sendall(self._maybe_corrupt(message))
        except OSError:
            pass
        self._close_pair(server, client)

    @staticmethod
    def _next_message_end(buffer: bytearray) -> int | None:
        """Length of the complete message at the start of ``buffer``, or None if more bytes are needed."""
        if not buffer:
            return None
        if buffer[0] == 0x24:  # '$': interleaved binary packet
            if len(buffer) < INTERLEAVED_HEADER_BYTES:
                return None
            (length,) = struct.unpack(">H", buffer[2:4])
            end = INTERLEAVED_HEADER_BYTES + length
            return end if len(buffer) >= end else None
        header_end = buffer.find(b"\r\n\r\n")
        if header_end < 0:
            return None
        body_length = 0
        for line in bytes(buffer[:header_end]).split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                body_length = int(value.strip())
        end = header_end + 4 + body_length
        return end if len(buffer) >= end else None

    def _maybe_corrupt(self, message: bytes) -> bytes:
        if message[:1] != b"$" or message[1] != 0:
            return message  # RTSP text, or RTCP / another channel
        self.rtp_packets += 1
        first_byte = message[INTERLEAVED_HEADER_BYTES]
        csrc_count = first_byte & 0x0F
        payload_start = INTERLEAVED_HEADER_BYTES + RTP_HEADER_BYTES + 4 * csrc_count
        if first_byte & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
            (words,) = struct.unpack(">H", message[payload_start + 2 : payload_start + 4])
            payload_start += 4 + 4 * words
        damage_from = payload_start + 2
        if len(message) <= damage_from or self._random.random() >= self.corrupt_fraction:
            return message
        damaged = bytearray(message)
        for _ in range(self.bytes_per_packet):
            damaged[self._random.randrange(damage_from, len(damaged))] ^= 0xFF
        self.corrupted_packets += 1
        return bytes(damaged)

    def _close_pair(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stall(self) -> None:
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    def drop_connections(self) -> None:
        """Cut every carried connection (both sides); new connections are still accepted."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        self._close_pair(*sockets)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop_connections()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class BlackHole:
    """Accepts TCP connections on loopback and never sends a byte: a server that hangs."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, name="black-hole", daemon=True).start()

    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam0"

    def _accept_loop(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._held.append(connection)  # held open, never read or answered

    def close(self) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


if __name__ == "__main__":  # a quick manual check: python tests/rtsp.py
    print(rtsp_server_unavailable() or "the RTSP test server can run here", file=sys.stderr)
