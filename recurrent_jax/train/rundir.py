"""Run directories: created once, written by one process at a time, and
holding the resolved config that makes a run resumable.

One writer per directory: ``locked(workdir)`` holds an exclusive
``fcntl.flock`` on ``<workdir>/.lock`` (per process in a multi-process
sweep, ``distributed.process_path``) and writes the holder's host and PID
into it. A second run into the directory is refused with one line naming
the holder; the operating system releases a dead process's lock, so a lock
file left by a process that no longer runs is taken over, with a one-line
notice naming it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from recurrent_jax.train.config import ConfigError

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"


class WorkdirInUse(ConfigError):
    """Another live process holds the run directory's lock."""


def make_workdir(workdir) -> Path:
    """Creates the run or sweep directory ``workdir`` (and its parents); a
    path that is a file or cannot be created is a ConfigError naming it."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir: expected a directory, got the file {str(workdir)!r}")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        # A file of its own: processes of one job probe the same directory.
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".recurrent_jax_write_test"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"--workdir: cannot write to {str(workdir)!r}: {reason}") from None
    return workdir


@contextlib.contextmanager
def locked(workdir, *, log: Callable[[str], None] = print) -> Iterator[Path]:
    """Creates ``workdir`` and holds its lock while inside; yields the path.

    Raises ``WorkdirInUse`` when a live process holds it. ``log`` gets the
    notice when a dead process's lock is taken over."""
    from recurrent_jax.distributed import process_path  # jax loads on first use

    workdir = make_workdir(workdir)
    path = process_path(workdir / LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirInUse(
                f"--workdir: {workdir} is in use by {_describe(_read(fd))}; wait for it to "
                "finish or stop it, or pass another --workdir"
            ) from None
        previous = _read(fd)
        if previous:
            log(f"{workdir}: taking over the lock left by {_describe(previous)}, no longer running")
        _write(fd, {"host": socket.gethostname(), "pid": os.getpid(), "since": _now()})
        try:
            yield workdir
        finally:
            os.ftruncate(fd, 0)  # an empty lock file is a free one
    finally:
        os.close(fd)  # releases the flock


def _read(fd: int) -> dict:
    data = os.pread(fd, 4096, 0)
    try:
        record = json.loads(data) if data.strip() else {}
    except ValueError:
        return {"unreadable": data[:80].decode(errors="replace")}
    return record if isinstance(record, dict) else {}


def _write(fd: int, record: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    os.fsync(fd)


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "another process"
    since = f" since {holder['since']}" if holder.get("since") else ""
    return f"process {holder['pid']} on host {holder.get('host', '?')}{since}"


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


# --- the saved config -------------------------------------------------------------


def save_or_match(path: Path, resolved: dict, read: Callable[[dict], dict], what: str) -> None:
    """Writes ``resolved`` to the JSON file ``path``, or, when the file is
    there, checks that ``read(its contents)`` equals ``read(resolved)`` (a
    ConfigError naming the keys that differ: then it is another ``what``)."""
    if not path.exists():
        path.write_text(json.dumps(resolved, indent=2) + "\n")
        return
    saved, wanted = read(json.loads(path.read_text())), read(json.loads(json.dumps(resolved)))
    if saved != wanted:
        diff = sorted(_diff(saved, wanted))
        raise ConfigError(
            f"--workdir: {path.parent} holds a different {what} (differs at {diff}); pass a "
            f"fresh --workdir, or omit --config to resume the saved {what}"
        )


def _diff(a, b, prefix=""):
    keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else None
    if keys is None:
        return [prefix] if a != b else []
    out = []
    for k in keys:
        out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
    return out
