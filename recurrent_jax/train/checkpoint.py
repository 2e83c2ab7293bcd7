"""Orbax checkpoints of a ``TrainState``: keep the last N and the best.

The best checkpoint is the one with the best eval ``primary_metric``; it is
preserved beside the last ``keep`` ones. A checkpoint that cannot be read
raises ``CheckpointError`` and nothing is deleted or overwritten.
"""

from __future__ import annotations

import math
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
    ):
        """``process_local``: with several processes, this process alone
        writes ``directory`` (its own arrays, no barriers with the others)."""
        try:
            import orbax.checkpoint as ocp
        except ImportError as e:
            raise ImportError(
                "checkpoints need orbax-checkpoint: pip install 'recurrent-jax[experiments]'"
            ) from e
        self._ocp = ocp
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
            self.manager.save(step, args=self._ocp.args.StandardSave(state), metrics=metrics)
        except OSError as error:  # disk full, permissions: the earlier steps stay
            reason = error.strerror or str(error)
            raise CheckpointError(
                f"{self.directory}: cannot save the checkpoint of step {step}: {reason}; "
                f"the checkpoints saved before it are kept (latest: step {self.latest_step()})"
            ) from None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

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
        of ``like`` (a freshly initialised state)."""
        if self._host:
            target = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), like)
        else:
            target = jax.tree_util.tree_map(self._ocp.utils.to_shape_dtype_struct, like)
        path = self.directory / str(step)
        try:
            restored = self.manager.restore(step, args=self._ocp.args.StandardRestore(target))
        except Exception as e:  # orbax raises many types for unreadable files
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
