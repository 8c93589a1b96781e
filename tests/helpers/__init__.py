"""Helpers shared by the tests and the benchmarks: synthetic maps, the tiny ONNX model, walkers, the RTSP server.

Import them as ``tests.helpers.<module>`` (pytest and ``python -m benchmarks.<name>`` put the repository root on
the path).
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
