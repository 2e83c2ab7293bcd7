"""Checkpoints of a run directory: keep the last N and the best.

The best checkpoint is the one with the best eval ``primary_metric``; it is
preserved beside the last ``keep`` ones. A checkpoint that cannot be read
raises ``CheckpointError`` and nothing is deleted or overwritten.
``restore_newest`` resumes from the newest checkpoint that restores, and
every other that fails to (truncated or garbled files after a crash,
newer or older) is moved aside into ``<checkpoints>.corrupt/``, never
deleted.

With several processes orbax writes only global arrays (a host-local array
is refused, and NumPy leaves are written by process 0 alone), while each
process of a sweep holds its own runs: each then saves its stacked state as
NumPy files of its own (``ProcessCheckpointer``: ``<directory>/<step>.npz``,
the leaves in ``jax.tree_util`` order, restored into the structure of a
freshly initialised state), keeping the last ``keep``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import shutil
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SCORE = "score"  # the saved metric: larger is better


class CheckpointError(RuntimeError):
    """A checkpoint is corrupt or does not match the run's config."""


class Checkpointer:
    def __init__(
        self,
        directory: Path,
        *,
        keep: int,
        primary_metric: str,
        higher_is_better: bool,
        process_local: bool = False,
        log: Callable[[str], None] = print,
    ):
        """``process_local``: with several processes, this process alone
        writes ``directory`` (its own arrays, no barriers with the others).
        A checkpoint whose metadata files cannot be read (which orbax reads
        for every step on opening the directory) is moved aside first, with
        one line to ``log``."""
        try:
            import orbax.checkpoint as ocp
        except ImportError as e:
            raise ImportError(
                "checkpoints need orbax-checkpoint: pip install 'recurrent-jax[experiments]'"
            ) from e
        self._ocp = ocp
        _quiet_orbax_shutdown()
        self.directory = Path(directory).absolute()
        self.primary_metric, self.higher_is_better = primary_metric, higher_is_better
        managers = ocp.checkpoint_managers
        policy = managers.AnyPreservationPolicy(
            [
                managers.LatestN(keep),
                managers.BestN(
                    get_metric_fn=lambda m: m[SCORE], n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=lambda m: m[SCORE],  # also makes orbax write the metrics
            best_mode="max",
            enable_async_checkpointing=False,
            create=True,
        )
        # Orbax writes only global arrays with several processes: a
        # process-local checkpoint holds NumPy copies.
        self._host = process_local and jax.process_count() > 1
        if self._host:
            me = jax.process_index()
            self.directory.mkdir(parents=True, exist_ok=True)
            options.create = False  # orbax leaves it to us with active_processes
            options.multiprocessing_options = ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"process-{me}"
            )
        for step, reason in damaged_metadata(self.directory).items():
            moved = move_aside(self.directory / str(step), self.directory)
            log(f"checkpoint {step} could not be read ({reason}); moved to {moved}")
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, state, eval_metrics: dict | None = None) -> None:
        step = int(state.step)
        if step in self.manager.all_steps():
            return
        metrics = None
        if eval_metrics is not None:
            value = float(eval_metrics[self.primary_metric])
            metrics = {SCORE: value if self.higher_is_better else -value, "value": value}
        if self._host:
            state = jax.device_get(state)
        try:
            with _quiet_without_metrics(metrics):
                self.manager.save(step, args=self._ocp.args.StandardSave(state), metrics=metrics)
        except OSError as error:  # disk full, permissions: the earlier steps stay
            reason = error.strerror or str(error)
            raise CheckpointError(
                f"{self.directory}: cannot save the checkpoint of step {step}: {reason}; "
                f"the checkpoints saved before it are kept (latest: step {self.latest_step()})"
            ) from None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def move_aside(self, step: int) -> Path:
        """Moves checkpoint ``step`` out of the directory (see ``move_aside``)."""
        moved = move_aside(self.directory / str(step), self.directory)
        self.manager.reload()
        return moved

    def best_step(self) -> int | None:
        """The step with the best eval metric (None if none has metrics)."""
        scored = []
        for step in self.manager.all_steps():
            metrics = self.manager.metrics(step)
            if metrics and math.isfinite(metrics[SCORE]):
                scored.append((metrics[SCORE], -step, step))
        return max(scored)[2] if scored else None

    def restore(self, step: int, like):
        """The state saved at ``step``, with the structure, shapes and dtypes
        of ``like`` (a freshly initialised state). A one-run state saved
        before the run axis (arrays without its leading 1) gets it."""
        try:
            return self._restore_as(step, like)
        except CheckpointError as error:
            stacked = [a.shape[0] for a in jax.tree_util.tree_leaves(like) if a.ndim]
            if set(stacked) != {1}:
                raise
            lose = lambda a: jax.ShapeDtypeStruct(a.shape[1:] if a.ndim else (), a.dtype)  # noqa: E731
            try:
                old = self._restore_as(step, jax.tree_util.tree_map(lose, like))
            except CheckpointError:
                raise error from None
            return jax.tree_util.tree_map(lambda a, b: a[None] if b.ndim else a, old, like)

    def _restore_as(self, step: int, like):
        if self._host:
            target = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), like)
        else:  # onto one device: a checkpoint saved over a mesh reads on any devices
            one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree_util.tree_map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one), like
            )
        path = self.directory / str(step)
        try:
            restored = self.manager.restore(step, args=self._ocp.args.StandardRestore(target))
        except Exception as e:  # orbax raises many types for unreadable files
            _DAMAGED.add(str(path))
            _ignore_abandoned_reads()
            raise CheckpointError(
                f"checkpoint {path} could not be restored ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}). Nothing was deleted; "
                f"saved steps: {list(self.manager.all_steps())}. Move {path} aside to "
                "resume from an earlier step, or start a fresh --workdir."
            ) from e
        _check_like(restored, like, path)
        # Uncommitted arrays, like a fresh init's: the jitted stages then
        # hit their compilation cache instead of compiling again.
        return jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)), restored)

    def close(self) -> None:
        self.manager.close()


def checkpointer(
    directory: Path, task, keep: int, *, log=print, process_local: bool = False
) -> Checkpointer:
    """The orbax checkpoints of a run directory, scored by ``task``'s
    primary metric (see ``Checkpointer``)."""
    return Checkpointer(
        directory,
        keep=keep,
        primary_metric=task.primary_metric,
        higher_is_better=task.higher_is_better,
        process_local=process_local,
        log=log,
    )


def restore_newest(checkpoints, like, log: Callable[[str], None]) -> tuple[int | None, object]:
    """``(step, state)`` of the newest checkpoint of ``checkpoints`` (a
    ``Checkpointer`` or ``ProcessCheckpointer``) that restores, or
    ``(None, like)`` when there is none.

    The older checkpoints are restored too (one at a time, then dropped),
    so that none that cannot be read stays to be picked later (as the best
    one, say). Those that fail to restore into the same ``like`` where
    another one did are damaged: each is moved aside with one line to
    ``log``. When none restores, nothing is moved and the newest's
    ``CheckpointError`` is raised (a damaged single checkpoint and a model
    that no longer matches look alike)."""
    failed, newest = [], None
    for step in reversed(checkpoints.steps()):
        try:
            state = checkpoints.restore(step, like)
        except CheckpointError as error:
            failed.append((step, error))
            continue
        newest = newest or (step, state)
    if newest is None:
        if failed:
            raise failed[0][1]
        return None, like
    for bad, error in failed:
        moved = checkpoints.move_aside(bad)
        log(f"checkpoint {bad} could not be restored ({_reason(error)}); moved to {moved}")
    return newest


# Orbax runs each restore on an asyncio loop that it closes as soon as one
# read fails; the reads still in flight then report "Event loop is closed"
# (and, after shutdown, "cannot schedule new futures") through
# sys.unraisablehook, as stray tracebacks. Those, and only those, are dropped.
# Its other reads of that checkpoint that failed too are reported when
# their tasks are collected, as asyncio's "Task exception was never
# retrieved" log records: those that name a checkpoint already reported
# damaged (``_DAMAGED``) are dropped as well.
_ORBAX_SHUTDOWN_NOISE = ("Event loop is closed", "cannot schedule new futures after shutdown")
_DAMAGED: set[str] = set()


class _DamagedReadsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Task exception was never retrieved"):
            return True
        error = record.exc_info[1] if record.exc_info else None
        text = f"{record.getMessage()} {error}"
        return not any(path in text for path in _DAMAGED)


def _quiet_orbax_shutdown() -> None:
    previous = sys.unraisablehook
    if getattr(previous, "recurrent_jax", False):
        return
    logging.getLogger("asyncio").addFilter(_DamagedReadsFilter())

    def hook(unraisable):
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) in _ORBAX_SHUTDOWN_NOISE:
            return
        if any(path in str(error) for path in _DAMAGED):  # a read of one that failed
            return
        previous(unraisable)

    hook.recurrent_jax = True
    sys.unraisablehook = hook


def _ignore_abandoned_reads() -> None:
    """After a failed restore, the reads orbax had not started yet are
    collected unawaited, and Python warns of each (at whatever line is
    running then): once a checkpoint is reported damaged, those warnings
    are noise."""
    warnings.filterwarnings(
        "ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning
    )


@contextlib.contextmanager
def _quiet_without_metrics(metrics):
    """Orbax warns when a manager that tracks the best checkpoint saves one
    without metrics: an interrupt's save, which is meant to have none."""
    logger = logging.getLogger("absl")
    level = logger.level
    if metrics is None:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# The JSON files of a step that orbax reads when it opens the directory or
# restores; its arrays are binary (checked by restoring).
_METADATA_FILES = ("_CHECKPOINT_METADATA", "metrics/metrics", "default/_METADATA")


def damaged_metadata(directory: Path) -> dict[int, str]:
    """Step -> why, for the checkpoints in ``directory`` whose metadata
    files are not valid JSON (cut short by a crash, or overwritten)."""
    damaged = {}
    steps = [p for p in Path(directory).glob("*") if p.is_dir() and p.name.isdigit()]
    for step_dir in steps:
        for name in _METADATA_FILES:
            path = step_dir / name
            try:
                if path.exists():
                    json.loads(path.read_bytes())
            except (OSError, ValueError) as error:
                damaged[int(step_dir.name)] = f"{name}: {type(error).__name__}"
                break
    return dict(sorted(damaged.items()))


def move_aside(path: Path, directory: Path) -> Path:
    """Moves ``path`` into ``<directory>.corrupt/`` under its name and the
    time (never deleting it); returns where it went."""
    target_dir = directory.with_name(directory.name + ".corrupt")
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = target_dir / f"{path.name}-{stamp}"
    shutil.move(str(path), str(target))
    return target


def _reason(error: CheckpointError) -> str:
    cause = error.__cause__
    text = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
    return text.splitlines()[0][:160] if text else type(error).__name__


def _check_like(restored, like, path) -> None:
    got = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), restored)
    want = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), like)
    if got != want:
        raise CheckpointError(
            f"checkpoint {path} does not match this run's model: it holds "
            f"{_describe(got)}, the config builds {_describe(want)}. Nothing was deleted."
        )


def _describe(tree) -> str:
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))
    return ", ".join(f"{jax.tree_util.keystr(p)}{list(s)}" for p, (s, _) in leaves[:4]) + (
        ", ..." if len(leaves) > 4 else ""
    )


# --- one process's own checkpoints (a sweep in several processes) ---------------


def save_tree(path: Path, tree) -> None:
    """Writes the leaves of ``tree`` to ``path`` (``.npz``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = [np.asarray(a) for a in jax.device_get(jax.tree_util.tree_leaves(tree))]
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        np.savez(f, *leaves)
    os.replace(partial, path)


def load_tree(path: Path, like):
    """The tree saved at ``path``, with the structure, shapes and dtypes of
    ``like`` (arrays or ``jax.ShapeDtypeStruct``); an object array is a
    ``CheckpointError``, never unpickled (a run directory may be someone
    else's)."""
    wanted, treedef = jax.tree_util.tree_flatten(like)
    try:
        with np.load(path, allow_pickle=False) as f:
            leaves = [f[f"arr_{i}"] for i in range(len(f.files))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path} could not be read ({e})") from e
    got = [(a.shape, a.dtype) for a in leaves]
    want = [(tuple(a.shape), np.dtype(a.dtype)) for a in wanted]
    if got != want:
        raise CheckpointError(
            f"checkpoint {path} does not match this sweep's model: it holds {got[:3]}..., "
            f"the config builds {want[:3]}... ({len(got)} and {len(want)} arrays)"
        )
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in leaves])


class ProcessCheckpointer:
    """``Checkpointer``'s interface for one process's stacked sweep state."""

    def __init__(self, directory: Path, *, keep: int):
        self.directory, self.keep = Path(directory), keep

    def steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.stem) for p in self.directory.glob("*.npz") if p.stem.isdigit())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, state, eval_metrics: dict | None = None) -> None:
        step = int(state.step)
        if step in self.steps():
            return
        save_tree(self.directory / f"{step}.npz", state)
        for old in self.steps()[: -self.keep]:
            (self.directory / f"{old}.npz").unlink()

    def restore(self, step: int, like):
        return load_tree(self.directory / f"{step}.npz", like)

    def move_aside(self, step: int) -> Path:
        return move_aside(self.directory / f"{step}.npz", self.directory)

    def close(self) -> None:
        pass
