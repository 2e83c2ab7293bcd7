"""The engine's backends: one table of what can run a recurrence and how.

Each ``Backend`` says why it cannot run a given ``Call`` (cell, dtype,
platform, options in use), why ``impl="auto"`` passes it over although it
could run it (measured slower, or unsafe under ``jax.vmap``), and how it
runs. ``choose`` is the one dispatch site: an explicit ``impl`` that cannot
run the call is an error listing every reason; "auto" takes the first
backend of ``TABLE`` with no reasons of either kind. ``TABLE`` is in the
order measurement prefers (benchmarks/RESULTS.md): on TPUs the Pallas TPU
kernel for cells linear in their carry (recurrentgemma's measurements; ours
await a TPU), the FFT convolution for time-invariant cells (S4D),
parallel-in-time scans where they win, Mamba's selective scan for S6 on
CPUs, then the CPU
extension's recurrences on CPUs, then the fused custom VJP, then the plain
scan, which runs everything.

Platform conditions read ``jax.default_backend()``: the table decides for the
host that traces the call. A program exported for another platform
(``jax.export(..., platforms=[...])``) gets the host's choices; an explicit
``impl`` chooses for it instead (the Pallas kernels lower natively for their
platform and run interpreted on others).

Every backend computes the function of ``_step.step`` scanned over time, so
padding, resets and regularisers mean the same whichever one runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _step, convolution, cpu, cudnn, deer, fused, parallel, selective
from recurrent_jax.cells.base import Cell, widen

# Options of a call that some backend cannot honour, or honours at a cost
# (an initial carry: the FFT convolution adds its terms only when one is given).
OPTIONS = (
    "mask",
    "reverse",
    "resets",
    "return_carries",
    "recurrent_dropout",
    "zoneout",
    "remat",
    "no_hoist",
    "initial_carry",
)


class Call(NamedTuple):
    """What a backend is asked to run.

    Attributes:
      cell: the cell, defaults filled in (``cells.base.with_defaults``).
      params: its params.
      xs: time-major inputs (T, B..., D), before the input projection.
      engine: the ``rj.Engine`` of the call.
      uses: the names of ``OPTIONS`` that are in use.
    """

    cell: Cell
    params: Any
    xs: jax.Array
    engine: Any
    uses: frozenset


class Backend(NamedTuple):
    """A row of the table.

    Attributes:
      name: the ``impl`` that requests it.
      blockers: ``blockers(call) -> [reason]``, why it cannot run ``call``.
      auto_blockers: ``auto_blockers(call) -> [reason]``, why "auto" does not
        pick it although it can run ``call``.
      run: ``run(call, carry0, inputs, options) -> (final, ys, carries)``
        over time-major ``_step.StepInputs`` whose ``xp`` holds the raw
        inputs; ``carries`` is None unless ``return_carries`` is in use.
    """

    name: str
    blockers: Callable[[Call], list[str]]
    auto_blockers: Callable[[Call], list[str]]
    run: Callable


def choose(call: Call) -> Backend:
    """The backend that runs ``call`` (see the module docstring)."""
    impl = call.engine.impl
    if impl != "auto":
        backend = TABLE[impl]
        reasons = blockers(backend, call)
        if reasons:
            raise ValueError(f"impl: {impl!r} cannot be used here: {'; '.join(reasons)}")
        return backend
    for backend in TABLE.values():
        if not blockers(backend, call) and not backend.auto_blockers(call):
            return backend
    raise AssertionError("the 'scan' backend runs every call")


def blockers(backend: Backend, call: Call) -> list[str]:
    """Why ``backend`` cannot run ``call``: its own reasons, and for a cell
    with spatial axes (convolutional) any backend but "scan"."""
    reasons = backend.blockers(call)
    if call.cell.spatial_dims and backend.name != "scan":
        reasons = [*reasons, "the cell has spatial axes (convolutional), which only 'scan' runs"]
    return reasons


def run(backend: Backend, call: Call, carry0, inputs, options):
    """``backend.run`` under a named scope, so profiles say what ran."""
    with jax.named_scope(f"recurrent_jax.{backend.name}"):
        return backend.run(call, carry0, inputs, options)


def lengths_of(valid, num_steps, batch_shape):
    """int32 (B...) valid steps per sequence from a (T, B...) mask or None."""
    if valid is None:
        return jnp.full(batch_shape, num_steps, jnp.int32)
    return valid.sum(0).astype(jnp.int32)


def unroll_factor(unroll, hidden_size) -> int:
    """Steps per scan iteration for ``Engine.unroll`` ("auto": measured)."""
    if unroll != "auto":
        return unroll
    # Measured (benchmarks/RESULTS.md): on CPU unrolling only slows the
    # loop; on an H100 16 steps per iteration beat 8 below H = 1024 and
    # lost to it at 1024.
    if jax.default_backend() == "cpu":
        return 1
    return 16 if (hidden_size or 0) < 1024 else 8


# --- the backends ------------------------------------------------------------


def _never(call):
    return []


def _no_hoist(call):
    if "no_hoist" in call.uses:
        return ["`hoist=False` projects x_t inside each step, which only 'scan' runs"]
    return []


def _options_set(call, names) -> list[str]:
    """A reason for each of the options ``names`` that ``call`` uses."""
    return [f"`{name}` is set" for name in names if name in call.uses]


# The per-step options the single-kernel backends (pallas, cpu) do not run.
_KERNEL_UNSUPPORTED = ("resets", "return_carries", "recurrent_dropout", "zoneout")


def _project(call, inputs):
    cell, params = call.cell, call.params
    time_axis = -2 - cell.spatial_dims  # project takes (B..., T, *spatial, D)
    xp = jnp.moveaxis(cell.project(params, jnp.moveaxis(inputs.xp, 0, time_axis)), time_axis, 0)
    return inputs._replace(xp=xp)


def _scan_run(call, carry0, inputs, options):
    cell = call.cell if call.engine.hoist else _projecting_in_step(call.cell)
    inputs = _project(call._replace(cell=cell), inputs)
    keep = "return_carries" in call.uses

    def body(carry, step_inputs):
        new, y = _step.step(cell, call.params, options, carry, step_inputs)
        return new, ((y, new) if keep else y)

    n_unroll = unroll_factor(call.engine.unroll, cell.hidden_size)
    final, outs = jax.lax.scan(body, carry0, inputs, unroll=n_unroll)
    return (final, *outs) if keep else (final, outs, None)


def _projecting_in_step(cell: Cell) -> Cell:
    """``cell`` whose step reads raw x_t and projects it itself (no hoisting)."""

    time_axis = -2 - cell.spatial_dims

    def update(params, carry, x_t, h_in):
        xp = cell.project(params, jnp.expand_dims(x_t, time_axis))
        return cell.update(params, carry, jnp.squeeze(xp, time_axis), h_in)

    identity = lambda params, xs: xs  # noqa: E731
    return cell._replace(
        project=identity,
        update=update,
        pointwise=None,
        linear=None,
        time_invariant=None,
        selective=None,
    )


def _fused_blockers(call):
    reasons = []
    if call.cell.pointwise is None:
        reasons.append(f"the {call.cell.name} cell has no `pointwise` split")
    return reasons + _options_set(call, ("resets", "return_carries")) + _no_hoist(call)


def _fused_run(call, carry0, inputs, options):
    n_unroll = unroll_factor(call.engine.unroll, call.cell.hidden_size)
    final, ys = fused.fused_scan(
        call.cell, call.params, carry0, _project(call, inputs), options, n_unroll
    )
    return final, ys, None


def _pallas_blockers(call):
    reasons = []
    if call.cell.pointwise is None:
        reasons.append(f"the {call.cell.name} cell has no `pointwise` split")
    if jax.default_backend() == "tpu":
        reasons.append("the kernel lowers for CUDA GPUs (Triton) and CPUs (interpret mode)")
    w_hh = call.params.get("w_hh") if isinstance(call.params, dict) else None
    if jax.default_backend() == "gpu" and w_hh is not None:
        from recurrent_jax import pallas  # jax.experimental.pallas loads on first use

        reasons += pallas.gpu_blockers(call.params, call.cell.compute_dtype or w_hh.dtype)
    reasons += _options_set(call, _KERNEL_UNSUPPORTED)
    return reasons + _no_hoist(call)


def _pallas_run(call, carry0, inputs, options):
    from recurrent_jax import pallas  # jax.experimental.pallas loads on first use

    final, ys = pallas.pallas_scan(call.cell, call.params, carry0, _project(call, inputs))
    return final, ys, None


def _cpu_blockers(call):
    reasons = []
    if jax.default_backend() != "cpu":
        reasons.append(f"it runs on CPUs, the default backend is {jax.default_backend()!r}")
    if call.cell.cudnn_kernel not in ("lstm", "gru"):
        reasons.append(
            f"the {call.cell.name} cell is not a plain fp32 LSTM or reset-after GRU "
            "(default activations, no projection, peepholes or layer norm)"
        )
    dtypes = {jnp.dtype(a.dtype) for a in jax.tree_util.tree_leaves(call.params)}
    if dtypes | {jnp.dtype(call.xs.dtype)} != {jnp.dtype(jnp.float32)}:
        got = sorted(map(str, dtypes | {jnp.dtype(call.xs.dtype)}))
        reasons.append(
            f"its kernels compute in float32 only, got dtypes {got} (bf16 and float64 run on "
            "the XLA backends, which take them)"
        )
    reasons += _options_set(call, ("recurrent_dropout", "zoneout"))
    if not reasons:  # build only when it would run
        missing = cpu.unavailable()
        reasons += [missing] if missing else []
    return reasons + _no_hoist(call)


def _cpu_run(call, carry0, inputs, options):
    keep = "return_carries" in call.uses
    return cpu.cpu_scan(call.cell, call.params, carry0, inputs, options.reset_carry, keep)


def _linear_blockers(call):
    reasons = []
    if call.cell.linear is None:
        reasons.append(
            f"it needs a cell linear in its carry (`Cell.linear`); the {call.cell.name} "
            "cell is not: use impl='deer' for nonlinear cells"
        )
    return reasons + _no_hoist(call)


def _pallas_tpu_blockers(call):
    reasons = _linear_blockers(call)
    if jax.default_backend() == "gpu":
        reasons.append(
            "the kernel lowers for TPUs (Mosaic) and runs interpreted elsewhere; on GPUs "
            "'associative' runs cells linear in their carry"
        )
    wide = sorted({str(d) for d in _dtypes(call) if jnp.dtype(d).itemsize == 8})
    if wide:
        reasons.append(f"Mosaic computes it in float32, got {wide} (float64 runs on 'scan')")
    if not reasons and "zoneout" in call.uses and _complex_coefficients(call):
        reasons.append(f"`zoneout` is set: the {call.cell.name} cell's state is complex")
    return reasons


def _pallas_tpu_auto_blockers(call):
    if jax.default_backend() != "tpu":
        return [
            "`auto` picks it on TPUs only (elsewhere it runs in interpret mode: correct, "
            f"slow); the default backend is {jax.default_backend()!r}"
        ]
    return []


def _pallas_tpu_run(call, carry0, inputs, options):
    from recurrent_jax import pallas_tpu  # jax.experimental.pallas loads on first use

    inputs = _project(call, inputs)
    return parallel.linear_scan(
        call.cell, call.params, carry0, inputs, options, solver=pallas_tpu.scan
    )


def _dtypes(call):
    return {jnp.dtype(a.dtype) for a in jax.tree_util.tree_leaves((call.params, call.xs))}


def _complex_coefficients(call) -> bool:
    """Whether the cell's ``linear`` gives complex coefficients (shapes only)."""
    cell = call.cell
    struct = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
    coeffs = jax.eval_shape(
        lambda p, x: cell.linear(p, cell.project(p, x)),
        jax.tree_util.tree_map(struct, call.params),
        struct(call.xs),
    )
    return any(jnp.issubdtype(c.dtype, jnp.complexfloating) for c in coeffs)


def _associative_auto_blockers(call):
    if parallel.prefers_associative(call.cell, call.xs.shape[0]):
        return []
    return [f"below the measured crossover length on {jax.default_backend()}"]


def _associative_run(call, carry0, inputs, options):
    return parallel.linear_scan(call.cell, call.params, carry0, _project(call, inputs), options)


def _chunked_run(call, carry0, inputs, options):
    length = call.engine.chunk_length or parallel.DEFAULT_CHUNK_LENGTH
    keep = "return_carries" in call.uses
    inputs = _project(call, inputs)
    return parallel.linear_scan(call.cell, call.params, carry0, inputs, options, length, keep)


# The per-step options no whole-row backend (fft, selective) runs.
_CARRY_EDITS = {
    "recurrent_dropout": "`recurrent_dropout` is set: it edits the carry at every step",
    "zoneout": "`zoneout` is set: it edits the carry at every step",
}


def _whole_row_blockers(call, field: str, needs: str, refused: dict) -> list[str]:
    """Why a backend that reads each row whole through the cell's optional
    field ``field`` cannot run ``call``: the cell lacks it (``needs`` says
    what it needs), or an option it does not run is on (``refused``: option
    -> reason, besides the carry edits and ``hoist=False``)."""
    reasons = []
    if getattr(call.cell, field) is None:
        reasons.append(f"it needs {needs}; the {call.cell.name} cell is not one")
    refused = {**refused, **_CARRY_EDITS}
    return reasons + [why for name, why in refused.items() if name in call.uses] + _no_hoist(call)


def _fft_blockers(call):
    return _whole_row_blockers(call, "time_invariant", convolution.NEEDS, convolution.REFUSED)


def _fft_run(call, carry0, inputs, options):
    u = widen(_project(call, inputs).xp, carry0.dtype)
    initial = carry0 if "initial_carry" in call.uses else None
    system = call.cell.time_invariant(call.params)
    final, ys = convolution.run_carry(system, u, initial, inputs.valid, "reverse" in call.uses)
    return final.astype(carry0.dtype), ys, None


def _selective_blockers(call):
    return _whole_row_blockers(call, "selective", selective.NEEDS, selective.REFUSED)


def _selective_auto_blockers(call):
    if jax.default_backend() == "cpu":
        return []
    return ["`auto` takes it on CPUs only until it is measured on an accelerator"]


def _selective_run(call, carry0, inputs, options):
    xp = widen(_project(call, inputs).xp, carry0.dtype)
    terms, readout = call.cell.selective(call.params, xp)
    final, ys = selective.run_carry(terms, carry0, inputs.valid)
    ys = readout(xp, ys)
    if inputs.valid is not None:  # the gate and skip of a padded step: still 0
        ys = jnp.where(inputs.valid[..., None], ys, 0.0)
    return final.astype(carry0.dtype), ys, None


def _deer_run(call, carry0, inputs, options):
    e = call.engine
    opts = deer.DeerOptions(e.deer_tol, e.deer_max_iters, e.deer_quasi)
    return deer.deer_scan(call.cell, call.params, carry0, _project(call, inputs), options, opts)


def _cudnn_blockers(call):
    in_use = {name: name in call.uses for name in OPTIONS if name not in _CUDNN_TAKES}
    return cudnn.blockers(call.cell, call.params, call.xs, in_use) + _no_hoist(call)


_CUDNN_TAKES = ("no_hoist", "initial_carry")  # refused by _no_hoist; run by the kernel


def _cudnn_run(call, carry0, inputs, options):
    batch_shape = inputs.xp.shape[1:-1]
    lengths = lengths_of(inputs.valid, inputs.xp.shape[0], batch_shape)
    return (*cudnn.cudnn_lstm(call.params, carry0, inputs.xp, lengths), None)


def _always(reason):
    return lambda call: [reason]


TABLE = {
    backend.name: backend
    for backend in (
        Backend(
            "cudnn",
            _cudnn_blockers,
            _always("`auto` never picks it: cuDNN's kernel cannot run under jax.vmap"),
            _cudnn_run,
        ),
        Backend("pallas_tpu", _pallas_tpu_blockers, _pallas_tpu_auto_blockers, _pallas_tpu_run),
        Backend("fft", _fft_blockers, _never, _fft_run),
        Backend("associative", _linear_blockers, _associative_auto_blockers, _associative_run),
        Backend("selective", _selective_blockers, _selective_auto_blockers, _selective_run),
        Backend(
            "chunked",
            _linear_blockers,
            _always("`auto` prefers 'associative' for cells linear in their carry"),
            _chunked_run,
        ),
        Backend(
            "deer",
            _no_hoist,
            _always("`auto` never picks it: its cost depends on Newton convergence"),
            _deer_run,
        ),
        Backend(
            "pallas",
            _pallas_blockers,
            _always("`auto` does not pick it until it is measured faster on a GPU"),
            _pallas_run,
        ),
        Backend("cpu", _cpu_blockers, _never, _cpu_run),
        Backend("fused", _fused_blockers, _never, _fused_run),
        Backend("scan", _never, _never, _scan_run),
    )
}
NAMES = tuple(TABLE)
# the ``Cell`` field a backend needs of every cell it runs (config-time check)
CELL_NEEDS = {
    "pallas_tpu": "linear",
    "associative": "linear",
    "chunked": "linear",
    "fft": "time_invariant",
    "selective": "selective",
}
