"""`run_tree`: a bench command that runs out of time takes what it started with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from . import run_tree

# A runner that starts a server-like child, says its pid, and never ends (as bench/run.py stuck on a load generator).
STUCK = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_command_out_of_time_leaves_no_process_behind() -> None:
    """The runner and the child it started are both gone once `run_tree` gives up on it."""
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        run_tree([sys.executable, "-c", STUCK], timeout=1.5)
    assert time.monotonic() - started < 10
    child = int(timed_out.value.stdout)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"the runner's child {child} is still running")
