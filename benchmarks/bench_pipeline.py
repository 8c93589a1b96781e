"""Multi-stream pipeline benchmark: aggregate fps, frame latency and pipeline efficiency for N = 1, 2, 4, 8, 16
streams of one video. The same code as ``posestream bench`` (pipeline/bench.py); this wrapper only writes the
results into benchmarks/results/ by default.

    python -m benchmarks.bench_pipeline [--video V] [--streams 1,2,4,8,16] [--frames-per-stream 48]
                                        [--batch 4] [--model M] [--backend openvino] [--overlay]
"""
from __future__ import annotations

import sys
from pathlib import Path

from posestream.pipeline.cli.main import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    # Later flags win in argparse, so --out-json/--out-png on the command line replace these.
    sys.exit(main(["bench", "--out-json", str(RESULTS / "pipeline.json"), *sys.argv[1:]]))
