"""The CPU backend refuses wrong shapes with a clear error and never crashes.

Each case of ``native_fuzz.py`` (wrong params, carries, inputs and lengths
through ``rj.unroll`` on the native path; wrong buffers given to the native
handlers directly) runs in a worker process: a case that aborts its process
(a memory error) fails this test by name, and the next worker goes on with
the cases after it. ``test_cpu_sanitized.py`` runs the same cases on a build
under AddressSanitizer and UBSan.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from recurrent_jax import cpu

HERE = Path(__file__).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        jax.default_backend() != "cpu" or cpu.unavailable() is not None,
        reason=f"the CPU extension does not run here: {cpu.unavailable()}",
    ),
]


def run_cases(indices: list[int], env: dict | None = None) -> dict[int, str]:
    """Verdict of each case; a case whose worker died is ``crashed ...``
    with the end of the worker's output."""
    verdicts, todo = {}, list(indices)
    while todo:
        done = subprocess.run(
            [sys.executable, str(HERE / "native_fuzz.py"), *map(str, todo)],
            capture_output=True,
            text=True,
            timeout=1800,  # the sanitized run of test_cpu_sanitized.py, on a shared machine
            env=env,
        )
        started = None
        for line in done.stdout.splitlines():
            word, _, rest = line.partition(" ")
            if word == "start":
                started = int(rest)
            elif word == "done":
                index, _, verdict = rest.partition(" ")
                verdicts[int(index)] = verdict
                started = None
        if done.returncode == 0 and started is None:
            break
        if started is None:  # died between cases: report the next one
            started = next(i for i in todo if i not in verdicts)
        tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
        verdicts[started] = f"crashed (exit {done.returncode}): " + " | ".join(tail)
        todo = todo[todo.index(started) + 1 :]
    return verdicts


def failures(verdicts: dict[int, str]) -> list[str]:
    from native_fuzz import cases

    all_cases = cases()
    return [f"{all_cases[i]}: {v}" for i, v in sorted(verdicts.items()) if v != "ok"]


def test_wrong_shapes_raise_clear_errors_and_never_crash():
    from native_fuzz import cases

    verdicts = run_cases(list(range(len(cases()))), env=dict(os.environ))
    assert not failures(verdicts), "\n".join(failures(verdicts))
    assert len(verdicts) == len(cases())
