"""The command line as a user meets it, in real processes: two runs into
one directory, Ctrl-C during training and during compilation, damaged
checkpoints; each ends in its one line, with no traceback."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
SMOKE = ["--config=adding:smoke", "--no-progress"]


def start(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "recurrent_jax", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def wait_for_line(process: subprocess.Popen, text: str) -> list[str]:
    """Reads stdout until a line containing ``text``; returns the lines read."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never printed: {lines} {process.stderr.read()}")


def finish(process: subprocess.Popen, timeout=300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def records_by_key(workdir: Path) -> list[tuple]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [(json.loads(line)["step"], json.loads(line)["split"]) for line in lines]


def test_a_second_run_into_a_running_workdir_is_refused(tmp_path):
    workdir = tmp_path / "run"
    first = start(
        "train", *SMOKE, f"--workdir={workdir}", "--config.training.num_steps=300", cwd=ROOT
    )
    wait_for_line(first, "workdir:")
    while not (workdir / ".lock").exists() or not (workdir / ".lock").read_text():
        time.sleep(0.05)
    second = start(
        "train", *SMOKE, f"--workdir={workdir}", "--config.training.num_steps=300", cwd=ROOT
    )
    code, out, err = finish(second)
    assert code == 2, err
    assert err.strip() == err.strip().splitlines()[0]  # one line
    assert f"in use by process {first.pid}" in err and "Traceback" not in err
    code, _, err = finish(first)
    assert code == 0 and "Traceback" not in err
    keys = records_by_key(workdir)
    assert len(keys) == len(set(keys)) == 2 * 30 + 1  # each step's records once


def test_ctrl_c_stops_a_sweep_cleanly_and_it_resumes(tmp_path):
    workdir = tmp_path / "sweep"
    args = [
        "sweep",
        "--config=adding_sweep:smoke",
        "--no-progress",
        f"--workdir={workdir}",
        "--config.training.num_steps=100000",
        "--compilation-cache=none",
    ]
    sweep = start(*args, cwd=ROOT)
    wait_for_line(sweep, "grid point 1/1")
    time.sleep(2)
    sweep.send_signal(signal.SIGINT)
    code, out, err = finish(sweep)
    assert code == 130, err
    assert "Traceback" not in err and "Directory not empty" not in err, err
    assert err.strip().splitlines() == [
        "interrupted: stopping after the current call (Ctrl-C again to stop at once)"
    ]
    assert "interrupted" in out and f"resume with: recurrent-jax sweep --workdir={workdir}" in out
    step = json.loads((workdir / "summary.json").read_text())["points"][0]["step"]
    resumed = start(
        "sweep", "--no-progress", f"--workdir={workdir}", "--compilation-cache=none", cwd=ROOT
    )
    lines = wait_for_line(resumed, "grid point 1/1")
    assert f"resumed from step {step}" in lines[-1]
    resumed.send_signal(signal.SIGINT)
    code, out, err = finish(resumed)
    assert code == 130 and "Traceback" not in err, err
    assert f"(resumed from step {step})" in out


def test_ctrl_c_during_compilation_is_one_line(tmp_path):
    train = start(
        "train", "--config=adding", "--no-progress", f"--workdir={tmp_path / 'run'}", cwd=ROOT
    )
    wait_for_line(train, "workdir:")
    train.send_signal(signal.SIGINT)  # while it builds and compiles
    code, out, err = finish(train)
    assert code == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # Stopped at the first point where a stop is taken, or before the run
    # began: either way in a line, or the usual summary.
    stopped = "interrupted at step" in out and "resume with: recurrent-jax train" in out
    assert (
        stopped
        or err.strip() == "recurrent-jax: interrupted (the checkpoints saved so far are kept)"
    )


def test_damaged_checkpoints_give_one_line_and_no_stray_tracebacks(tmp_path):
    workdir = tmp_path / "run"
    code, _, err = finish(start("train", *SMOKE, f"--workdir={workdir}", cwd=ROOT))
    assert code == 0, err
    checkpoints = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
    assert len(checkpoints) >= 2
    damaged = tmp_path / "damaged"
    (workdir / "summary.json").unlink()  # as after a crash before the end
    shutil.copytree(workdir, damaged)
    for path in (damaged / "checkpoints").rglob("*"):  # every checkpoint's arrays
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[:10])
    code, _, err = finish(start("train", "--no-progress", f"--workdir={damaged}", cwd=ROOT))
    assert code == 1 and "Traceback" not in err, err
    assert err.strip().startswith("recurrent-jax: error: checkpoint") and len(err.splitlines()) == 1
    for path in (workdir / "checkpoints" / str(checkpoints[-1])).rglob("*"):  # the latest only
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[:10])
    code, out, err = finish(start("train", "--no-progress", f"--workdir={workdir}", cwd=ROOT))
    assert code == 0 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and f"checkpoint {checkpoints[-1]} could not" in err
    assert f"resumed from step {checkpoints[-2]}" in out
