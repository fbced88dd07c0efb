"""Tests of bench/run.py and bench/soak.py, which start servers, Redis and load generators of their own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def run_tree(argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(argv, capture_output=True, text=True, timeout=timeout)`, but the command gets a session of its
    own, and if it runs out of time (or the test is interrupted: pytest-timeout) its whole process group is killed.
    bench/run.py and bench/soak.py start `peercall serve`, redis-server and node: killing the runner alone, as
    `subprocess.run` does, left those running for the rest of the suite."""
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            exc.stdout, exc.stderr = proc.communicate()  # what it printed until then, as `subprocess.run` gives
            raise
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
