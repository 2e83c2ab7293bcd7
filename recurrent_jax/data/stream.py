"""The streamed, host-fed training path (``config.data.stream = True``).

A task whose training rows live on the host (``TaskSpec.train_rows``, a
``Rows``) can be fed to the device a compiled call at a time instead of
living there whole. ``Stream`` reads them through grain: the row indices
shuffled by ``seed`` afresh every epoch (``MapDataset.shuffle(seed).repeat()``),
cut into batches of ``batch_size`` and those into calls of ``steps_per_call``
batches; each call's rows are gathered (``Rows.take``), padded by the task
to the data's length, and put on the device on ``threads`` background
threads, ``prefetch`` calls ahead of the one training.

The stream depends on ``seed`` alone, not on a run's key: every run of a
sweep trains on the same batches. Its state is the number of calls read
(grain's iterator state, ``{"next_index": calls}``): a run checkpoints it
(``runs.RunsState.data``) and ``seek(calls)`` puts it back, so a resumed
run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.data.base import Batch, MissingExtraError, Rows


class Stream:
    """Calls of training batches from ``rows``: ``next()`` returns a
    ``Batch`` whose fields are (steps_per_call, batch_size, ...)."""

    def __init__(
        self,
        rows: Rows,
        batch_size: int,
        steps_per_call: int,
        *,
        seed: int = 0,
        prefetch: int = 2,
        threads: int = 2,
        place: Callable[[Batch], Batch] = jax.device_put,
    ):
        if not isinstance(rows, Rows):
            _checks.fail_type("rows", "an rj.data.Rows (TaskSpec.train_rows)", rows)
        if not _checks.is_int(rows.count) or rows.count < 1:
            _checks.fail("rows.count", "a positive int", rows.count)
        for name, value in (("batch_size", batch_size), ("steps_per_call", steps_per_call)):
            _checks.check_positive_int(name, value)
        _checks.check_non_negative("seed", seed)
        _checks.check_positive_int("prefetch", prefetch)
        _checks.check_positive_int("threads", threads)
        grain = _grain()
        take = lambda indices: place(_take_call(rows, indices))  # noqa: E731
        calls = (
            grain.MapDataset.range(rows.count)
            .shuffle(seed=seed)
            .repeat()
            .batch(batch_size)
            .batch(steps_per_call)
            .map(take)
        )
        read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
        self._iterator = iter(calls.to_iter_dataset(read))

    def next(self) -> Batch:
        """The next call's batches: fields (steps_per_call, batch_size, ...)."""
        return next(self._iterator)

    @property
    def calls_read(self) -> int:
        """The calls handed out so far (from grain's iterator state)."""
        state = self._iterator.get_state()
        if set(state) != {"next_index"}:
            raise RuntimeError(f"grain's iterator state: expected {{'next_index': n}}, got {state}")
        return int(state["next_index"])

    def seek(self, calls_read: int) -> None:
        """Continues after the first ``calls_read`` calls (a resumed run's
        checkpointed ``calls_read``)."""
        calls = int(np.asarray(calls_read))
        _checks.check_non_negative_int("calls_read", calls)
        self._iterator.set_state({"next_index": calls})


def _take_call(rows: Rows, indices: np.ndarray) -> Batch:
    """The rows of ``indices`` (S, B) as a ``Batch`` of (S, B, ...) fields."""
    batch = rows.take(np.asarray(indices).reshape(-1))
    if not isinstance(batch, Batch):
        _checks.fail_type("rows.take(indices)", "an rj.data.Batch", batch)
    return jax.tree_util.tree_map(
        lambda a: np.asarray(a).reshape(*indices.shape, *a.shape[1:]), batch
    )


def _grain():
    try:
        import grain
    except ImportError as e:
        raise MissingExtraError("data.stream needs grain: pip install 'recurrent-jax[data]'") from e
    return grain


__all__ = ["Stream"]
