"""One writer per run directory: a live holder's lock refuses a second run
with one line naming it; a dead holder's lock is taken over with a notice;
a directory holding another run is a one-line config error; the marker is
written whole and once, also where the file system has no hard links, and
one of another kind written meanwhile by another process wins."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ml_collections")

from recurrent_jax import cli  # noqa: E402
from recurrent_jax.train import config_files, from_config_dict, rundir, to_dict  # noqa: E402

HOLD = textwrap.dedent(
    """
    import sys
    from recurrent_jax.train import rundir
    with rundir.claim(sys.argv[1], rundir.TRAIN, name="adding"):
        print("held", flush=True)
        sys.stdin.readline()  # hold until told, or until killed
    """
)


def holder(workdir):
    """A process holding ``workdir``'s lock (once it printed "held")."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_live_holder_refuses_a_second_writer(tmp_path):
    process = holder(tmp_path)
    try:
        with pytest.raises(rundir.WorkdirInUse) as error, rundir.locked(tmp_path):
            pass
        message = str(error.value)
        assert f"in use by process {process.pid} on host {socket.gethostname()}" in message
        assert "\n" not in message
    finally:
        process.communicate("")
    assert process.returncode == 0


def test_a_released_lock_is_free_and_silent(tmp_path):
    process = holder(tmp_path)
    process.communicate("")  # released on leaving the with-block
    notices = []
    with rundir.locked(tmp_path, log=notices.append):
        record = json.loads((tmp_path / rundir.LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert notices == []
    assert (tmp_path / rundir.LOCK_FILE).read_text() == ""


def test_a_dead_holders_lock_is_taken_over_with_a_notice(tmp_path):
    process = holder(tmp_path)
    process.kill()  # no clean exit: its record stays in the lock file
    process.wait()
    assert str(process.pid) in (tmp_path / rundir.LOCK_FILE).read_text()
    notices = []
    with rundir.locked(tmp_path, log=notices.append):
        pass
    assert len(notices) == 1
    assert f"taking over the lock left by process {process.pid}" in notices[0]


def test_the_cli_refuses_a_held_workdir_in_one_line(tmp_path, capsys):
    process = holder(tmp_path)
    try:
        code = cli.main(["train", "--config=adding:smoke", f"--workdir={tmp_path}"])
    finally:
        process.communicate("")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("recurrent-jax: error: --workdir:") and "\n" not in err
    assert f"in use by process {process.pid}" in err
    assert not (tmp_path / "config.json").exists()  # nothing written under another's lock


def test_a_workdir_of_another_run_is_a_one_line_error(tmp_path, capsys):
    other = config_files.apply_overrides(
        config_files.load_config("adding:smoke"), [("model.hidden_size", "5")]
    )
    rundir.mark(tmp_path, rundir.TRAIN, name="adding")
    (tmp_path / "config.json").write_text(json.dumps(to_dict(from_config_dict(other))))
    code = cli.main(["train", "--config=adding:smoke", f"--workdir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("recurrent-jax: error: --workdir:") and "holds a different run" in err
    assert "model.hidden_size" in err and "\n" not in err


@pytest.mark.parametrize("links", [True, False])  # False: a file system without hard links
def test_a_marker_is_written_whole_once_and_a_racing_one_of_another_kind_wins(
    tmp_path, monkeypatch, links
):
    real_link = os.link

    def link(source, target):
        if not links:
            raise PermissionError(1, "Operation not permitted")
        real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    first = tmp_path / "first"
    first.mkdir()
    marker = rundir.mark(first, rundir.TRAIN, name="adding")
    assert rundir.read_marker(first) == marker and marker["kind"] == rundir.TRAIN
    assert os.listdir(first) == [rundir.MARKER_FILE]  # no temporary file left behind
    assert rundir.mark(first, rundir.TRAIN, name="other")["name"] == "adding"  # kept

    def racing(source, target):  # another process of a job marks it a sweep meanwhile
        Path(target).write_text(json.dumps({"kind": rundir.SWEEP, "name": "theirs"}))
        link(source, target)

    second = tmp_path / "second"
    second.mkdir()
    monkeypatch.setattr(os, "link", racing)
    with pytest.raises(rundir.ConfigError, match=r"holds a sweep \('theirs'\)"):
        rundir.mark(second, rundir.TRAIN, name="adding")
    assert os.listdir(second) == [rundir.MARKER_FILE]
    assert rundir.read_marker(second)["kind"] == rundir.SWEEP


def test_asyncio_reports_of_reads_from_a_reported_damaged_checkpoint_are_dropped():
    """Orbax's other failed reads of a checkpoint already reported damaged
    surface as asyncio "Task exception was never retrieved" records; only
    those that name such a checkpoint are dropped."""
    import logging

    from recurrent_jax.train import checkpoint

    damaged = "/runs/x/checkpoints/30"
    checkpoint._DAMAGED.add(damaged)
    keep = checkpoint._DamagedReadsFilter()

    def record(message, error):
        return logging.LogRecord(
            "asyncio", logging.ERROR, "", 0, message, None, (ValueError, error, None)
        )

    stray = ValueError(f'OUT_OF_RANGE: reading "{damaged}/default/d/86fa"')
    assert not keep.filter(record("Task exception was never retrieved\nfuture: <Task>", stray))
    other = ValueError("OUT_OF_RANGE: reading /runs/y/checkpoints/10/default")
    assert keep.filter(record("Task exception was never retrieved\nfuture: <Task>", other))
    assert keep.filter(record("Unclosed client session", stray))
