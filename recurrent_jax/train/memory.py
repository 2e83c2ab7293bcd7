"""Device memory of a run, from shapes alone, before anything is allocated.

``estimate(setup, hparams)`` traces a run's stages with ``jax.eval_shape``
(nothing is compiled or allocated) and counts the bytes of its state (the
params and optimizer state, held three times: the state, the best state
and the updated one), a training step (gradients, a batch and the
residuals the backward pass keeps) and an evaluation (the held-out batch
and the outputs). ``check_fits`` refuses, in one line naming the sizes
that make it large (vocabulary, classes, steps, batch), a run that needs
more than the device has: ``RECURRENT_JAX_MEMORY_LIMIT_GB`` if set, else
the device's memory (a GPU's or TPU's bytes limit; on CPU the physical
memory). A sweep vmaps as many runs per call as fit in
``MEMORY_FRACTION`` of the free memory (``choose_runs_per_call``).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import numpy as np

from recurrent_jax.data.base import CLASSIFICATION
from recurrent_jax.train import core
from recurrent_jax.train.config import ConfigError

MEMORY_FRACTION = 0.5  # of free device memory the runs of one call may use
LIMIT_ENV = "RECURRENT_JAX_MEMORY_LIMIT_GB"
GIB = 1 << 30


class RunBytes(NamedTuple):
    """Device bytes of one run (see the module docstring)."""

    state: int  # params and optimizer state, three times
    step: int  # a training step: gradients, batch, residuals
    evaluation: int  # the held-out batch and the outputs

    @property
    def total(self) -> int:
        return self.state + max(self.step, self.evaluation)


def estimate(setup: core.Setup, hparams) -> RunBytes:
    """The ``RunBytes`` of a run of ``setup``, from ``jax.eval_shape``."""
    key = jax.random.key(0)

    def residuals(params):
        batch = _train_batch(setup, key)
        loss = lambda p: setup.model.loss(hparams, p, batch, key, 0)[0]  # noqa: E731
        return batch, jax.vjp(loss, params)[1]

    state = jax.eval_shape(lambda: core.init_state(setup, hparams, key))
    step = jax.eval_shape(residuals, state.params)
    evaluation = jax.eval_shape(
        lambda s: (core.eval_batch(setup, key), core.evaluate(setup, hparams, key, s)[1]), state
    )
    params = nbytes(state.params)
    return RunBytes(3 * nbytes(state), params + nbytes(step), nbytes(evaluation))


def _train_batch(setup: core.Setup, key):
    """A training batch of the run's shape; a streamed run's from the host
    (its rows are never uploaded whole)."""
    if setup.streamed:
        return setup.task.train_rows.take(np.zeros(setup.batch_size, np.int64))
    return setup.task.sample_train(key, setup.batch_size)


def nbytes(tree) -> int:
    """Bytes of the arrays (or ``ShapeDtypeStruct``s) of ``tree``."""
    leaves = jax.tree_util.tree_leaves(tree)
    return int(sum(np.prod(a.shape, dtype=np.float64) * np.dtype(a.dtype).itemsize for a in leaves))


# --- how much there is -------------------------------------------------------------


def free_device_bytes(device=None) -> int:
    """Free memory of ``device``: ``memory_stats()`` where the backend has
    it (GPU, TPU), else the host's available memory (CPU)."""
    device = jax.local_devices()[0] if device is None else device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def memory_limit(device=None) -> tuple[int, str]:
    """(bytes one run may need, where that limit comes from):
    ``$RECURRENT_JAX_MEMORY_LIMIT_GB``, else the device's whole memory."""
    text = os.environ.get(LIMIT_ENV)
    if text is not None:
        try:
            gb = float(text)
        except ValueError:
            gb = -1.0
        if not gb > 0:
            raise ConfigError(f"{LIMIT_ENV}: expected a positive number of GiB, got {text!r}")
        return int(gb * GIB), LIMIT_ENV
    device = jax.local_devices()[0] if device is None else device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]), f"the memory of this {device.platform} device"
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62, "no known limit"
    return int(total), "the memory of this machine"


def check_fits(setup: core.Setup, hparams, runs: int = 1) -> RunBytes:
    """The ``RunBytes`` of one run of ``setup``; a ``ConfigError`` naming
    the sizes that make it large when ``runs`` of them need more than
    ``memory_limit()``."""
    need = estimate(setup, hparams)
    limit, source = memory_limit()
    if runs * need.total <= limit:
        return need
    many = f"{runs} runs of " if runs > 1 else ""
    raise ConfigError(
        f"config: {many}this model needs about {runs * need.total / GIB:.1f} GiB of device "
        f"memory (per run: params and optimizer state {need.state / GIB:.1f} GiB, a training "
        f"step {need.step / GIB:.1f} GiB, an evaluation {need.evaluation / GIB:.1f} GiB), more "
        f"than the {limit / GIB:.1f} GiB of {source}; {_sizes(setup)}. Make them smaller, or "
        f"set {LIMIT_ENV}"
    )


def _sizes(setup: core.Setup) -> str:
    """The sizes of the task that the memory grows with, in words."""
    task = setup.task
    batch = jax.eval_shape(lambda: _train_batch(setup, jax.random.key(0)))
    parts = []
    if task.input_vocab is not None:
        parts.append(f"an input vocabulary of {task.input_vocab} tokens")
    noun = "classes" if task.kind == CLASSIFICATION else "outputs"
    parts.append(f"{task.output_size} {noun}")
    steps = batch.xs.shape[1] if len(batch.xs.shape) > 1 else 1
    parts.append(f"batches of {setup.batch_size} sequences of {steps} steps")
    parts.append(f"evaluations of {setup.eval_size} sequences (data.eval_size)")
    return "the task has " + ", ".join(parts)


def choose_runs_per_call(total: int, bytes_per_run: int, free_bytes: int) -> int:
    """Runs per vmapped call: all of them if they fit in
    ``MEMORY_FRACTION`` of ``free_bytes``, else as many as fit (at least 1)."""
    fit = int(MEMORY_FRACTION * free_bytes) // max(bytes_per_run, 1)
    return max(1, min(total, fit))
