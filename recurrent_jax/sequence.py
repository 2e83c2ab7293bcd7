"""The sequence engine: run a cell over time.

``unroll`` hoists the input half of every gate out of the loop (one GEMM for
all steps), then scans the recurrent half. It owns padding, reverse order,
per-sequence regularisers, episode resets and the choice of implementation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, _step, cudnn, deer, fused, parallel
from recurrent_jax import remat as remat_module
from recurrent_jax._step import StepInputs, StepOptions
from recurrent_jax.cells.base import CARRY_DTYPE, Cell, with_defaults

IMPLS = ("auto", "scan", "fused", "associative", "chunked", "deer", "cudnn")


def unroll(
    cell: Cell,
    params,
    xs: jax.Array,
    *,
    initial_carry=None,
    seq_lengths=None,
    mask=None,
    resets=None,
    reset_carry=None,
    reverse: bool = False,
    keep_order: bool = True,
    time_major: bool = False,
    unroll="auto",
    impl: str = "auto",
    hoist: bool = True,
    return_carries: bool = False,
    dropout=0.0,
    recurrent_dropout=0.0,
    zoneout=0.0,
    key=None,
    deterministic: bool = False,
    chunk_length: int | None = None,
    deer_tol: float = 1e-5,
    deer_max_iters: int | None = None,
    deer_quasi: bool = False,
    remat: int | None = None,
):
    r"""Runs ``cell`` over the time axis of ``xs``.

    Args:
      cell: a ``Cell``; user cells may give only ``init`` and ``step``.
      params: the cell's params.
      xs: inputs (B..., T, D), any number of batch dims; (T, B..., D) with
        ``time_major``.
      initial_carry: carry at t = 0 (default ``cell.initial_carry``, zeros),
        leaves (B..., ·).
      seq_lengths: ints (B...) in [0, T]; steps t >= length are padding.
      mask: bool (B..., T) ((T, B...) with ``time_major``), True where valid.
        Padded steps keep the carry and output zeros.
      resets: bool like ``mask``; where set, the carry restarts from
        ``initial_carry`` before reading x_t (episode boundaries).
      reverse: read each sequence from its last valid step back to the first.
        Outputs stay aligned with input positions (y_t is the output after
        reading x_{len-1}, ..., x_t), as PyTorch's backward direction.
      keep_order: with ``reverse``, False returns outputs in processing
        order instead (y_0 after reading x_{len-1}); needs prefix masks.
      reset_carry: the carry ``resets`` restart from (default: the initial
        carry), leaves (B..., ·).
      time_major: layout of ``xs``, ``mask``, ``resets`` and the outputs.
      unroll: steps per scan iteration; "auto" is 1 on CPU and elsewhere 16
        for H < 1024, else 8 (fastest on an H100; benchmarks/RESULTS.md).
      hoist: compute ``project`` for all steps as one GEMM before the scan
        (default); False projects x_t inside each step instead, which ran
        1.5× faster for an LSTM at (32, 128, 128, 128) on a 2-core CPU
        (benchmarks/RESULTS.md). False needs impl "scan" or "auto".
      impl: "scan" (autodiff of ``lax.scan``), "fused" (custom VJP whose
        backward scan carries only the sequential terms and computes the
        weight gradients as single GEMMs; cells with ``pointwise``), or
        "associative" (``jax.lax.associative_scan`` over the coefficients of
        cells linear in the carry, ``Cell.linear``; see ``parallel``),
        "chunked" (associative within chunks of ``chunk_length`` steps,
        sequential across them: bounded memory), "deer" (Newton iterations
        over the whole trajectory for any cell, each solved by an
        associative scan; see ``deer``), or "auto": fused where it applies,
        associative for linear cells when T >= ``parallel.CROSSOVER_T`` of
        the backend, else scan. The fused path supports reverse-mode
        autodiff only: use "scan" for ``jax.jvp``/``jacfwd``. "cudnn" runs
        a plain fp32 LSTM through cuDNN's kernel on a CUDA GPU, padding by
        ``seq_lengths`` only, not under ``jax.vmap`` (``recurrent_jax.cudnn``);
        "auto" never picks it, so that training steps stay vmappable.
      return_carries: also return the carry after every step (B..., T, ·).
      dropout: variational input dropout rate: one mask per sequence over
        the features of x, the same at every step (Gal & Ghahramani 2016).
      recurrent_dropout: rate of one mask per sequence over the recurrent
        input h_{t-1} of the recurrent kernel (Gal & Ghahramani 2016).
      zoneout: rate at which each carry unit keeps its previous value at a
        step (Krueger et al. 2016); at evaluation the expectation
        ``p·old + (1−p)·new`` is used. It acts on the carry: ``y_t`` is the
        cell's output before zoneout.
      key: PRNG key for the regularisers; required when one is active.
      deterministic: evaluation mode; dropout off, zoneout averaged.
      chunk_length: steps per chunk of ``impl="chunked"`` (default
        ``parallel.DEFAULT_CHUNK_LENGTH``).
      deer_tol: ``impl="deer"`` stops when no carry entry moves more than
        ``deer_tol`` (absolute) in a Newton iteration.
      deer_max_iters: iteration limit of ``impl="deer"`` (default
        min(T + 1, 100); Newton is exact after T); not converged, the
        sequential scan's result is used and a RuntimeWarning is emitted.
      deer_quasi: quasi-DEER (Gonzalez et al. 2024): diagonal Jacobians in
        the forward iterations (gradients stay exact).
      remat: rematerialise in segments of ``remat`` steps: the forward
        stores only the carry at each segment boundary and the backward
        recomputes each segment (its input projection too), so activation
        memory falls from O(T) to O(T/remat + remat) steps for one extra
        forward pass; ``remat`` ≈ √T minimises it (``recurrent_jax.remat``).

    Returns:
      ``(final_carry, ys)`` with ys (B..., T, H) (zero at padded steps), and
      ``carries`` third when ``return_carries``. The final carry is the carry
      after the last valid step (the initial carry for length 0).
    """
    cell = with_defaults(cell)
    _checks.check_inputs(xs, _input_size(params), time_major)
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {list(IMPLS)}, got {impl!r}")
    if not hoist:
        if impl not in ("auto", "scan"):
            raise ValueError(f"hoist: False needs impl 'scan' or 'auto', got impl={impl!r}")
        cell, impl = _projecting_in_step(cell), "scan"
    if not time_major:
        xs = jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs.shape[0], xs.shape[1:-1]
    valid = valid_steps(seq_lengths, mask, batch_shape, num_steps, time_major)
    resets = _time_major_mask("resets", resets, batch_shape, num_steps, time_major)
    keys = _regulariser_keys(key, deterministic, dropout, recurrent_dropout, zoneout)

    carry0 = _initial_carry(cell, initial_carry, batch_shape)
    xs = _input_dropout(xs, dropout, keys[0], deterministic)
    step_inputs = StepInputs(
        xp=xs,  # projected inside ``run``, per segment with ``remat``
        valid=valid,
        keep=_zoneout_masks(carry0, num_steps, zoneout, keys[2], deterministic),
        reset=resets,
    )
    options = StepOptions(
        recurrent_mask=_recurrent_mask(cell, carry0, recurrent_dropout, keys[1], deterministic),
        zoneout=None if _checks.is_zero(zoneout) or not deterministic else zoneout,
        reset_carry=_reset_carry(cell, resets, reset_carry, carry0, batch_shape),
    )
    if reverse:
        step_inputs = jax.tree_util.tree_map(lambda a: jnp.flip(a, 0), step_inputs)

    chosen = _choose_impl(impl, cell, resets, return_carries, num_steps)
    if chosen == "cudnn":
        in_use = {
            "mask": mask is not None,
            "reverse": reverse,
            "resets": resets is not None,
            "return_carries": return_carries,
            "recurrent_dropout": keys[1] is not None,
            "zoneout": keys[2] is not None or options.zoneout is not None,
            "remat": remat is not None,
        }
        blockers = cudnn.blockers(cell, params, xs, in_use)
        if blockers:
            raise ValueError(f"impl: 'cudnn' cannot be used here: {'; '.join(blockers)}")
    n_unroll = _unroll_factor(unroll, cell.hidden_size)

    def run(carry, inputs):
        if chosen == "cudnn":
            lengths = _lengths(inputs.valid, inputs.xp.shape[0], batch_shape)
            return (*cudnn.cudnn_lstm(params, carry, inputs.xp, lengths), None)
        xp = jnp.moveaxis(cell.project(params, jnp.moveaxis(inputs.xp, 0, -2)), -2, 0)
        inputs = inputs._replace(xp=xp)
        if chosen in ("associative", "chunked"):
            chunked = chosen == "chunked"
            length = (chunk_length or parallel.DEFAULT_CHUNK_LENGTH) if chunked else None
            return parallel.linear_scan(cell, params, carry, inputs, options, length)
        if chosen == "deer":
            opts = deer.DeerOptions(deer_tol, deer_max_iters, deer_quasi)
            return deer.deer_scan(cell, params, carry, inputs, options, opts)
        if chosen == "fused":
            return (*fused.fused_scan(cell, params, carry, inputs, options, n_unroll), None)
        final, outs = jax.lax.scan(
            lambda c, s: _scan_body(cell, params, options, return_carries, c, s),
            carry,
            inputs,
            unroll=n_unroll,
        )
        return (final, *outs) if return_carries else (final, outs, None)

    segment_length = remat_module.check_remat(remat, num_steps)
    if segment_length is None:
        final, ys, carries = run(carry0, step_inputs)
    else:
        final, ys, carries = remat_module.segmented(run, carry0, step_inputs, segment_length)

    if reverse:
        ys, carries = jax.tree_util.tree_map(lambda a: jnp.flip(a, 0), (ys, carries))
        if not keep_order:
            lengths = _lengths(valid, num_steps, batch_shape)
            ys, carries = jax.tree_util.tree_map(lambda a: reverse_valid(a, lengths), (ys, carries))
    if not time_major:
        ys, carries = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, -2), (ys, carries))
    return (final, ys, carries) if return_carries else (final, ys)


def _scan_body(cell, params, options, return_carries, carry, inputs):
    new, y = _step.step(cell, params, options, carry, inputs)
    return new, ((y, new) if return_carries else y)


# --- argument handling ---------------------------------------------------


def _input_size(params):
    w = params.get("w_ih") if isinstance(params, dict) else None
    return None if w is None or not hasattr(w, "shape") else w.shape[0]


def _unroll_factor(unroll, hidden_size) -> int:
    if unroll == "auto":
        # Measured (benchmarks/RESULTS.md): on CPU unrolling only slows the
        # loop; on an H100 16 steps per iteration beat 8 below H = 1024 and
        # lost to it at 1024.
        if jax.default_backend() == "cpu":
            return 1
        return 16 if (hidden_size or 0) < 1024 else 8
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"unroll: expected a positive int or 'auto', got {unroll!r}")
    return unroll


def _projecting_in_step(cell: Cell) -> Cell:
    """``cell`` whose step reads raw x_t and projects it itself (no hoisting)."""

    def update(params, carry, x_t, h_in):
        xp_t = cell.project(params, x_t[..., None, :])[..., 0, :]
        return cell.update(params, carry, xp_t, h_in)

    identity = lambda params, xs: xs  # noqa: E731
    return cell._replace(project=identity, update=update, pointwise=None, linear=None)


def _choose_impl(impl, cell, resets, return_carries, num_steps):
    if impl == "cudnn":
        return impl
    if impl in parallel.IMPLS:
        parallel.check_impl(impl, cell)
        return impl
    if impl == "deer" or (impl == "auto" and parallel.prefers_associative(cell, num_steps)):
        return impl if impl == "deer" else "associative"
    blockers = []
    if cell.pointwise is None:
        blockers.append(f"the {cell.name} cell has no `pointwise` split")
    if resets is not None:
        blockers.append("`resets` is set")
    if return_carries:
        blockers.append("`return_carries` is set")
    if impl == "fused" and blockers:
        raise ValueError(f"impl: 'fused' cannot be used here: {'; '.join(blockers)}")
    if impl == "auto":
        return "scan" if blockers else "fused"
    return impl


def _time_major_mask(name, m, batch_shape, num_steps, time_major):
    if m is None:
        return None
    shape = (num_steps, *batch_shape) if time_major else (*batch_shape, num_steps)
    m = _checks.check_mask(name, m, shape)
    return m if time_major else jnp.moveaxis(m, -1, 0)


def valid_steps(seq_lengths, mask, batch_shape, num_steps, time_major):
    """(T, B...) bool of valid steps, or None when every step is valid."""
    if seq_lengths is not None and mask is not None:
        raise ValueError("seq_lengths, mask: give at most one of them, got both")
    if seq_lengths is not None:
        lengths = _checks.check_seq_lengths(seq_lengths, batch_shape, num_steps)
        steps = jnp.arange(num_steps).reshape(num_steps, *(1 for _ in batch_shape))
        return steps < lengths[None]
    return _time_major_mask("mask", mask, batch_shape, num_steps, time_major)


def _lengths(valid, num_steps, batch_shape):
    if valid is None:
        return jnp.full(batch_shape, num_steps, jnp.int32)
    return valid.sum(0).astype(jnp.int32)


def reverse_valid(a, lengths):
    """Reverses the first ``lengths[b]`` steps of each sequence of ``a``.

    a: (T, B..., ·) time-major; lengths: (B...). Padding stays in place.
    """
    num_steps = a.shape[0]
    steps = jnp.arange(num_steps).reshape(num_steps, *(1 for _ in lengths.shape))
    index = jnp.where(steps < lengths[None], lengths[None] - 1 - steps, steps)
    index = index.reshape(*index.shape, *(1 for _ in a.shape[index.ndim :]))
    return jnp.take_along_axis(a, jnp.broadcast_to(index, a.shape), axis=0)


def _initial_carry(cell, initial_carry, batch_shape):
    expected = cell.initial_carry(batch_shape, CARRY_DTYPE)
    if initial_carry is None:
        return expected
    _checks.check_carry("initial_carry", initial_carry, expected)
    return jax.tree_util.tree_map(lambda c: c.astype(CARRY_DTYPE), initial_carry)


def _reset_carry(cell, resets, reset_carry, carry0, batch_shape):
    if resets is None:
        return None
    if reset_carry is None:
        return carry0
    expected = cell.initial_carry(batch_shape, CARRY_DTYPE)
    _checks.check_carry("reset_carry", reset_carry, expected)
    return reset_carry


# --- regularisers --------------------------------------------------------


def _regulariser_keys(key, deterministic, dropout, recurrent_dropout, zoneout):
    """One key per active regulariser (input, recurrent, zoneout), else None."""
    rates = {"dropout": dropout, "recurrent_dropout": recurrent_dropout, "zoneout": zoneout}
    for name, rate in rates.items():
        _checks.check_rate(name, rate)
    active = [not deterministic and not _checks.is_zero(rate) for rate in rates.values()]
    if any(active) and key is None:
        raise ValueError(
            "key: a PRNG key is required when dropout, recurrent_dropout or "
            "zoneout is active and deterministic=False, got None"
        )
    if not any(active):
        return (None, None, None)
    k = jax.random.split(key, 3)
    return tuple(ki if on else None for ki, on in zip(k, active, strict=True))


def dropout_mask(key, rate, shape):
    """Inverted-dropout mask: 0 with probability ``rate``, else 1/(1−rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(CARRY_DTYPE)


def _input_dropout(xs, rate, key, deterministic):
    if key is None:
        return xs
    shape = (1, *xs.shape[1:])  # one mask per sequence, shared over time
    return xs * dropout_mask(key, rate, shape).astype(xs.dtype)


def _recurrent_mask(cell, carry0, rate, key, deterministic):
    if key is None:
        return None
    return dropout_mask(key, rate, cell.read(carry0).shape)


def _zoneout_masks(carry0, num_steps, rate, key, deterministic):
    if key is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten(carry0)
    keys = jax.random.split(key, len(leaves))
    masks = [
        jax.random.bernoulli(k, rate, (num_steps, *leaf.shape))
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, masks)
