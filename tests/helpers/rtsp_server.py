"""A real RTSP server for the live-source tests: GStreamer's RTSP server (GstRtspServer) serving H.264.

Runs under Debian's system python (``/usr/bin/python3``, which has ``gi``), not the project's venv:

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --streams 2 --size 320x180 --fps 15

serves ``rtsp://127.0.0.1:8554/cam0`` and ``/cam1``: a live moving-ball test pattern (with a running clock
when GStreamer's timeoverlay is installed), or ``--video FILE`` (an MP4 with H.264, sent as it is; the stream
ends with the file, and a client that reconnects gets it again from the start). Each client gets its own
pipeline, so clients do not share one picture stream. Prints ``READY <port>`` on stdout once it listens
(port 0 picks a free one), and ``MISSING <what>`` then exits 3 when a GStreamer part is not installed.
Stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import signal
import sys

EXIT_MISSING_PART = 3


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port for RTSP (0: any free one)")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--streams", type=int, default=1, help="mount points /cam0 ... /camN-1")
    parser.add_argument("--size", default="320x180", help="WIDTHxHEIGHT of the test pattern")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--keyframe-interval", type=int, default=0, help="frames between keyframes (0: = fps)")
    parser.add_argument("--video", default=None, help="serve this MP4 (H.264) instead of the test pattern")
    args = parser.parse_args(argv)
    width, _, height = args.size.partition("x")
    args.width, args.height = int(width), int(height)
    if args.streams < 1 or args.fps < 1 or args.width < 16 or args.height < 16:
        parser.error("need --streams >= 1, --fps >= 1 and a size of at least 16x16")
    return args


def launch_line(args: argparse.Namespace, stream: int, have_overlay: bool) -> str:
    """gst-launch syntax of one mount's media; the payloader must be named pay0 for GstRtspServer."""
    keyframes = args.keyframe_interval or args.fps
    if args.video:
        # The file's own H.264, re-payloaded; no re-encode.
        return f'( filesrc location="{args.video}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )'
    caps = f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1"
    # Different balls per mount make the streams tell apart in a picture.
    pattern = f"videotestsrc is-live=true pattern=ball foreground-color={0xFF00FF00 + 40 * stream:#x} ! {caps}"
    overlay = " ! timeoverlay font-desc=\"Sans 12\"" if have_overlay else ""
    encoder = (f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={keyframes} bitrate=800 "
               f"byte-stream=false")
    return f"( {pattern}{overlay} ! videoconvert ! {encoder} ! rtph264pay name=pay0 pt=96 config-interval=1 )"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as error:
        print(f"MISSING python gi / GstRtspServer: {error}", flush=True)
        return EXIT_MISSING_PART

    Gst.init(None)
    needed = ["rtph264pay"] + (["filesrc", "qtdemux", "h264parse"] if args.video else ["videotestsrc", "x264enc",
                                                                                       "videoconvert"])
    missing = [name for name in needed if Gst.ElementFactory.find(name) is None]
    if missing:
        print(f"MISSING GStreamer elements: {' '.join(missing)}", flush=True)
        return EXIT_MISSING_PART
    have_overlay = Gst.ElementFactory.find("timeoverlay") is not None

    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for stream in range(args.streams):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(args, stream, have_overlay))
        factory.set_shared(False)
        mounts.add_factory(f"/cam{stream}", factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"FAILED to listen on {args.address}:{args.port}", file=sys.stderr, flush=True)
        return 2
    # Stop cleanly on SIGTERM/SIGINT from the fixture (GLib runs the handler inside its loop).
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, lambda: loop.quit() or False)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
