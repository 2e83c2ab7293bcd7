"""Run directories: what owns one, one writer at a time, and the resolved
config that makes a run resumable.

What owns a directory: ``run.json`` (``MARKER_FILE``), the first file a
run writes into it (``claim``), records its kind (``KINDS``: a training
run, a sweep, or a sweep's best run), its config file and name. Every
command asks ``check`` before it reads or writes a directory, and a
directory of another kind, a folder that is not empty and holds no marker,
or one inside the data the run reads (``check_outside``) is refused with
one line (``ConfigError``) naming what it holds and what to run instead,
before any file there is created or changed.

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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from recurrent_jax import __version__
from recurrent_jax.train.config import ConfigError

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
MARKER_FILE = "run.json"
TRAIN, SWEEP, BEST_RUN = "train", "sweep", "best_run"
_PRIVATE = ".recurrent_jax_"  # files of a moment (write probes, a marker being written)
_MARKER_MAX_BYTES = 1 << 16


class Kind(NamedTuple):
    """A kind of run directory: what it ``holds`` (as messages say it), its
    config file, the ``commands`` that may use it (a writer first, if one
    may write it) and what to run on it instead (``{workdir}`` filled in)."""

    holds: str
    config_file: str
    commands: tuple[str, ...]
    instead: str


KINDS = {
    TRAIN: Kind(
        "a training run",
        CONFIG_FILE,
        ("train", "eval", "decode", "predict"),
        "resume it with `recurrent-jax train --workdir={workdir}` or evaluate it with "
        "`recurrent-jax eval --workdir={workdir}`",
    ),
    SWEEP: Kind(
        "a sweep",
        "sweep.json",
        ("sweep", "eval", "decode", "predict"),
        "resume it with `recurrent-jax sweep --workdir={workdir}`",
    ),
    BEST_RUN: Kind(
        "the best run of a sweep",
        CONFIG_FILE,
        ("eval", "decode", "predict"),
        "evaluate it with `recurrent-jax eval --workdir={workdir}` (only its sweep writes it)",
    ),
}
WRITES = {"train": TRAIN, "sweep": SWEEP}  # command -> the kind it makes


# --- what owns a directory -------------------------------------------------------


def check(workdir, command: str) -> dict | None:
    """The marker of ``workdir`` if ``command`` ("train", "sweep", "eval",
    "decode", "predict") may use it; None for a new or empty folder that ``command``
    would make a run directory of. Otherwise a one-line ``ConfigError``
    naming what the directory holds and what to run; nothing is written."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir: expected a directory, got the file {str(workdir)!r}")
    marker = read_marker(workdir)
    if marker is not None:
        kind = KINDS[marker["kind"]]
        if command in kind.commands:
            return marker
        verb = "write" if command in WRITES else "read"
        other = ", or pass another --workdir" if command in WRITES else ""
        raise ConfigError(
            f"--workdir: {workdir} holds {kind.holds} ({str(marker.get('name', '?'))[:100]!r}), "
            f"which `recurrent-jax {command}` does not {verb}; "
            f"{kind.instead.format(workdir=workdir)}{other}"
        )
    if command not in WRITES:
        state = "does not exist" if not workdir.exists() else f"has no {MARKER_FILE}"
        raise ConfigError(
            f"--workdir: {workdir} {state}, so it is not a run directory; `recurrent-jax "
            f"{command}` reads one made by `recurrent-jax train` (or a sweep's best_run/)"
        )
    names = sorted(os.listdir(workdir)) if workdir.exists() else []
    if MARKER_FILE in names:  # written since it was read, by another process of a job
        return check(workdir, command)
    found = [name for name in names if not name.startswith(_PRIVATE)]
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ConfigError(
            f"--workdir: {workdir} holds files ({shown}) but no {MARKER_FILE}, so it is not a "
            f"run directory; `recurrent-jax {command}` writes only into a new or empty folder "
            "or a run directory of its own: pass another --workdir"
        )
    return None


def read_marker(workdir) -> dict | None:
    """The marker of ``workdir`` (None when it has none); one that is not a
    regular file of a known kind is a ``ConfigError``."""
    path = Path(workdir) / MARKER_FILE
    if not path.exists() and not path.is_symlink():
        return None
    record = None
    if path.is_file():  # never a FIFO or a device: they block or never end
        with contextlib.suppress(OSError, ValueError, RecursionError), path.open("rb") as f:
            data = f.read(_MARKER_MAX_BYTES + 1)
            record = json.loads(data) if len(data) <= _MARKER_MAX_BYTES else None
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
        raise ConfigError(
            f"--workdir: {path} is not a run marker of recurrent-jax (a JSON object with a "
            f"kind among {list(KINDS)}); the directory is left as it is: pass another --workdir"
        )
    return record


def mark(workdir: Path, kind: str, **record) -> dict:
    """Writes the marker of ``workdir`` (a directory) for a run of
    ``kind``, with ``record`` (the config name...), unless one is there;
    returns the marker. Written whole or not at all, by one process of a
    job: a marker of another kind there is a ``ConfigError``."""
    workdir = Path(workdir)
    marker = read_marker(workdir)
    if marker is None:
        marker = {"kind": kind, "config": KINDS[kind].config_file, **record}
        marker |= {"created": _now(), "recurrent_jax": __version__}
        partial = workdir / f"{_PRIVATE}{uuid.uuid4().hex}.json"
        partial.write_text(json.dumps(marker, indent=2) + "\n")
        try:
            _link_or_create(partial, workdir / MARKER_FILE)  # never overwrites one
        except FileExistsError:  # another process wrote it first
            marker = read_marker(workdir)
        finally:
            partial.unlink(missing_ok=True)
    if marker["kind"] != kind:  # the directory is left as it is
        check(workdir, KINDS[kind].commands[0])  # raises, naming what is there
    return marker


def _link_or_create(source: Path, target: Path) -> None:
    """``target`` with the bytes of ``source``, created only if absent
    (``FileExistsError``): a hard link appears whole; where the file system
    has none, an exclusive create."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(source.read_bytes())


def check_outside(workdir, folders: dict[str, str]) -> None:
    """A ``ConfigError`` when ``workdir`` is one of the data ``folders``
    (``config.data.<option>`` -> path) or inside one: the run would read
    its own files as data."""
    target = Path(os.path.realpath(workdir))
    for key, folder in folders.items():
        root = Path(os.path.realpath(folder))
        if target == root or target.is_relative_to(root):
            raise ConfigError(
                f"--workdir: {workdir} is inside the data folder {key}={folder!r} that the run "
                "reads, so its files would be read as data; pass a --workdir outside it"
            )


@contextlib.contextmanager
def claim(
    workdir,
    kind: str,
    *,
    name: str,
    data_folders: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> Iterator[Path]:
    """Checks that a run of ``kind`` (``TRAIN`` or ``SWEEP``, config
    ``name``) may write ``workdir`` (``check``, ``check_outside``), then
    creates it, writes its marker first and holds its lock while inside
    (``locked``); yields the path."""
    new = check(workdir, KINDS[kind].commands[0]) is None
    check_outside(workdir, data_folders or {})
    workdir = make_workdir(workdir, probe=new)
    mark(workdir, kind, name=name)
    with locked(workdir, log=log) as path:
        yield path


# --- one writer at a time ----------------------------------------------------------


class WorkdirInUse(ConfigError):
    """Another live process holds the run directory's lock."""


def make_workdir(workdir, *, probe: bool = True) -> Path:
    """Creates the run or sweep directory ``workdir`` (and its parents); a
    path that is a file or cannot be created (or written, when ``probe``)
    is a ConfigError naming it."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir: expected a directory, got the file {str(workdir)!r}")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if probe:  # a file of its own: processes of one job probe the same directory
            with tempfile.NamedTemporaryFile(dir=workdir, prefix=f"{_PRIVATE}write_test"):
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

    workdir = make_workdir(workdir, probe=False)
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
    ConfigError naming the keys that differ: then it is another ``what``).
    A saved config that names other code than ``resolved`` differs there,
    and is not read (reading it would import that code)."""
    from recurrent_jax.train import config_files, references

    if not path.exists():
        path.write_text(json.dumps(resolved, indent=2) + "\n")
        return
    saved = config_files.read_json(path)
    code, wanted_code = references.named_code(saved), references.named_code(resolved)
    if code != wanted_code:
        diff = sorted({k for k in {**code, **wanted_code} if code.get(k) != wanted_code.get(k)})
        diff = [k.removeprefix("config.") for k in diff]
    else:
        diff = sorted(_diff(read(saved), read(json.loads(json.dumps(resolved)))))
    if diff:
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
