"""Outputs: where each stream's frames and people go once they are tracked.

A *sink* is anything with the four methods of the ``Sink`` protocol; the runtime tells it about each stream
it serves and hands it each frame's people.

    base.py      ``Sink`` (the protocol: when each method is called, threads, errors) and ``StreamInfo``
    jsonl.py     ``SharedJsonlSink``: the JSON-lines output, one file shared by several streams;
                 ``JsonlSink``: the writer of one such file (or stdout)
    overlay.py   ``OverlaySink``: one stream's overlay, a video file or annotated images
    callback.py  ``CallbackSink``: calls your ``fn(frame, people)`` for every frame
    records.py   ``frame_record``, ``person_record``: the public JSON schema (docs/output-schema.md)
    draw.py      ``draw_people``, ``TrackTrails``, ``trail_point``, ``track_colour``, the skeleton's colours
    video.py     ``VideoSink``: the writer of one overlay video file (PyAV); ``pick_video_encoder``
    images.py    ``ImageSink``: the writer of annotated JPEGs into a folder
    files.py     what the file writers share: creating the output folder, the OS's reason for a failure

``JsonlSink``, ``VideoSink`` and ``ImageSink`` write one file or folder from one thread; they are not
``Sink`` objects themselves but what the sinks above write with. Every problem with an output path
(missing folder, not writable, unknown video format) is a ``PosestreamError`` naming that path.
"""
