"""CI has no GPU: run the CUDA kernels' tests in Numba's CUDA simulator, in a subprocess.

The simulator is chosen by NUMBA_ENABLE_CUDASIM=1 when numba is imported, so it cannot be switched on inside
this session (which has imported numba already, and must keep the real numba.cuda for a GPU). The subprocess
runs the "numba-cuda" cases of tests/test_kernels.py and all of tests/test_kernels_cuda.py in well under a
minute; the full-size random-map parity (minutes there) is skipped in it and runs with ``-m slow``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import posestream.kernels.cuda as cuda_kernels
from tests.helpers import REPO

SIMULATOR_BUDGET_SECONDS = 240  # the run takes well under a minute; this only stops a hang


def run_in_simulator(selection: str, timeout: int, **environment: str) -> int:
    """pytest on the CUDA test files in a simulator subprocess -> the number of tests passed."""
    if cuda_kernels.simulated():
        pytest.skip("this session is the simulator: the CUDA tests run in it directly")
    if cuda_kernels.device_available():
        pytest.skip("a GPU is here: the CUDA tests run on it directly")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernels/test_parse.py",
               "tests/kernels/test_cuda.py", "-k", selection]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1", **environment},
                            capture_output=True, text=True, timeout=timeout)
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, f"CUDA tests failed in the simulator:\n{report}"
    passed = re.search(r"(\d+) passed", result.stdout)
    return int(passed.group(1)) if passed else 0


def test_cuda_kernels_pass_their_tests_in_the_simulator():
    passed = run_in_simulator("numba-cuda or test_cuda", SIMULATOR_BUDGET_SECONDS)
    assert passed >= 50, f"only {passed} CUDA tests passed: the backend did not join, or most were skipped"


@pytest.mark.slow
def test_cuda_kernels_match_the_reference_on_full_size_random_maps_in_the_simulator():
    """The 24 full-size parity cases the default run skips in the simulator (about two minutes)."""
    passed = run_in_simulator("numba-cuda and test_kernels_match_the_reference_on_random_maps", 1200,
                              POSESTREAM_SLOW_CUDA_SIMULATION="1")
    assert passed == 24
