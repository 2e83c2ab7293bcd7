"""``impl="pallas_tpu"``, the TPU kernel for cells linear in their carry, run
on CPU by Pallas's TPU interpret mode (VMEM, the grid's parallel and
arbitrary axes and two TensorCores simulated, race detection on), against:

- a float64 NumPy loop of ``h_t = a_t h_{t−1} + b_t`` on synthetic
  coefficients of each form (real, complex, 2×2 blocks), and ``jax.grad`` of
  a ``lax.scan`` of the same recurrence;
- the plain scan (``impl="scan"``) for every linear cell (LRU, RG-LRU,
  minGRU, log-space minGRU and minLSTM, S4D, S5, LinOSS, D-LinOSS, S6:
  real, complex and 2×2-block coefficients): outputs, final carries,
  per-step carries and gradients, with padding, resets and reverse, under
  ``jax.vmap``;
- the same sweep unsharded, for a sweep over a mesh of 4 CPU devices (in a
  child process: this file is also its script), where each device runs the
  kernel on its own runs' rows.

Lowering for TPU (Mosaic) is proven in tests/test_lowering.py.

Tolerances (fp32), normwise: each leaf to ``rel · max(1, max |leaf|)``. The
kernel computes the scan's own recurrence step by step, but XLA forms the
coefficients in other fusions (FMA contraction, exp), an LRU's outputs are
one GEMM over all steps instead of one per step (rounding bounded relative
to the largest terms, hence normwise) and the backward sums over time and
batch in another order: values to rel 1e-6, gradients to rel 1e-5 (the
most measured over every cell and shape here, several seeds: 2.5e-7 and
1.7e-6), for params whose recurrence is itself well conditioned
(``well_conditioned``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import normal, random_carry, random_params
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

import recurrent_jax as rj
from recurrent_jax import backends, pallas_tpu

VALUES, GRADS = 1e-6, 1e-5
D = 3
LINEAR_CELLS = {  # a cell the kernel serves is one line
    "lru": lambda h: rj.cells.lru(h, state_size=h - 1),
    "rglru": rj.cells.rglru,
    "mingru": rj.cells.mingru,
    "minlstm-log": lambda h: rj.cells.minlstm(h, log_space=True),
    "mingru-log": lambda h: rj.cells.mingru(h, log_space=True),
    "s4d": lambda h: rj.cells.s4d(h, state_size=4),
    "s5": lambda h: rj.cells.s5(h, state_size=4, blocks=2),
    "linoss": lambda h: rj.cells.linoss(h, state_size=3),
    "d-linoss": lambda h: rj.cells.linoss(h, state_size=3, damping=True),
    "s6": lambda h: rj.cells.s6(h, state_size=3),
}
# The default suite runs one cell per form of coefficients: complex (lru),
# real (minlstm-log, whose log-space coefficients reach the kernel
# exponentiated, the real linear-space path) and 2×2 blocks (d-linoss).
FAST = {"lru", "minlstm-log", "d-linoss"}


def by_speed(names, fast=FAST):
    """``names`` as pytest params, those outside ``fast`` marked slow."""
    return [pytest.param(n, marks=[] if n in fast else [pytest.mark.slow]) for n in names]


def assert_close(got, want, rel):
    """Same structure and shapes; each leaf within ``rel · max(1, max |want|)``."""
    got, want = planes(got), planes(want)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        w = np.asarray(w, np.float64)
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=0, atol=rel * scale)


@pytest.fixture
def tpu_interpret(capsys):
    """``tpu_interpret(cores=1, recorder=None)``: a context in which Pallas
    calls run in TPU interpret mode with race detection; at its end no race
    was reported."""

    @contextlib.contextmanager
    def interpret(cores=1, recorder=None):
        params = pltpu.InterpretParams(
            detect_races=True, num_cores_or_threads=cores, grid_point_recorder=recorder
        )
        try:
            with pltpu.force_tpu_interpret_mode(params):
                yield
        finally:
            pltpu.reset_tpu_interpret_mode_state()
        assert "RACE DETECTED" not in capsys.readouterr().out

    return interpret


# --- the kernel on synthetic coefficients ---------------------------------------------


def synthetic(form, rng, num_steps, units):
    """(a, b, h0) in float64 NumPy; |a| < 1 (blocks: spectral norm < 1)."""
    shape = (num_steps, *units)
    if form == "real":
        return rng.uniform(0.5, 1.0, shape), rng.normal(size=shape), rng.normal(size=units)
    if form == "complex":
        a = rng.uniform(0.5, 1.0, shape) * np.exp(1j * rng.uniform(0, 2 * np.pi, shape))
        cnormal = lambda s: rng.normal(size=s) + 1j * rng.normal(size=s)  # noqa: E731
        return a, cnormal(shape), cnormal(units)
    a = rng.normal(size=(*shape, 2, 2))
    a *= 0.95 / np.linalg.norm(a, ord=2, axis=(-2, -1))[..., None, None]
    return a, rng.normal(size=(*shape, 2)), rng.normal(size=(*units, 2))


def planes(tree):
    """Complex leaves as (real, imaginary) pairs, so that they compare whole."""
    split = lambda x: (np.real(x), np.imag(x)) if np.iscomplexobj(x) else x  # noqa: E731
    return jax.tree_util.tree_map(split, tree)


def numpy_loop(a, b, h0):
    h, states = h0, []
    for a_t, b_t in zip(a, b, strict=True):
        h = (np.einsum("...ij,...j->...i", a_t, h) if a_t.ndim > b_t.ndim else a_t * h) + b_t
        states.append(h)
    return np.stack(states)


def scan_reference(a, b, h0):
    def step(h, ab):
        a_t, b_t = ab
        h = (jnp.einsum("...ij,...j->...i", a_t, h) if a_t.ndim > b_t.ndim else a_t * h) + b_t
        return h, h

    return jax.lax.scan(step, h0, (a, b))[1]


def kernel_and_reference(form, rng, num_steps, units, **blocks):
    """((states, grads) of the kernel, the float64 loop's states, grads of the scan)."""
    a, b, h0 = synthetic(form, rng, num_steps, units)
    dtype = np.complex64 if form == "complex" else np.float32
    args = [jnp.asarray(x.astype(dtype)) for x in (a, b, h0)]
    weights = jnp.asarray(rng.normal(size=b.shape).astype(dtype))

    def loss(solve):
        return lambda *args: jnp.real(jnp.sum(solve(*args) * weights))

    def kernel(*args):
        return pallas_tpu.scan(*args, **blocks)

    got = jax.jit(lambda *x: (kernel(*x), jax.grad(loss(kernel), (0, 1, 2))(*x)))(*args)
    want_grads = jax.jit(jax.grad(loss(scan_reference), (0, 1, 2)))(*args)
    want = numpy_loop(a.astype(dtype), b.astype(dtype), h0.astype(dtype))
    return planes(got), planes(want), planes(want_grads)


@pytest.mark.parametrize("form", ["complex", "block"])  # real: the next test
def test_kernel_equals_a_numpy_loop_and_its_gradient_the_scans(form, rng, tpu_interpret):
    """T = 13 in time blocks of 8 (3 identity steps padded), 3 × 50 units in
    one block of 8 rows of 128 lanes (1,024 − 150 padded)."""
    with tpu_interpret():
        (states, grads), want, want_grads = kernel_and_reference(
            form, rng, 13, (3, 50), time_block=8
        )
    assert_close(states, want, 1e-5)  # fp32 against float64
    assert_close(grads, want_grads, GRADS)


def test_rows_run_on_two_cores_and_time_blocks_in_order(rng, tpu_interpret):
    """Two row blocks (3 × 400 units: 10 rows of 128, padded to 16) on a
    simulated megacore: the "parallel" row axis is split over both cores,
    each core takes the "arbitrary" time blocks in order, and (forward and
    adjoint) no race."""
    visits = []

    def record(*args):  # jax 0.10 passes (token, point, core) and takes the token back
        *_, point, core = args
        visits.append((tuple(int(i) for i in point), int(core)))
        return args[0] if len(args) == 3 else None

    with tpu_interpret(cores=2, recorder=record):
        (states, grads), want, want_grads = kernel_and_reference(
            "real", rng, 20, (3, 400), time_block=8
        )
    assert_close(states, want, 1e-5)
    assert_close(grads, want_grads, GRADS)
    assert {core for _, core in visits} == {0, 1}
    for row in (0, 1):
        assert len({core for point, core in visits if point[0] == row}) == 1
        times = [point[1] for point, _ in visits if point[0] == row]
        assert len(times) % 3 == 0 and times == [0, 1, 2] * (len(times) // 3)


def test_race_detection_is_live(capsys):
    """The check the fixture makes can fail: two cores writing one block race."""

    def racy(x_ref, o_ref):
        o_ref[...] = x_ref[...]

    call = pl.pallas_call(
        racy,
        out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
        grid=(2,),
        in_specs=[pl.BlockSpec((None, 8, 128), lambda i: (i, 0, 0))],
        out_specs=pl.BlockSpec((8, 128), lambda i: (0, 0)),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
        interpret=pltpu.InterpretParams(detect_races=True, num_cores_or_threads=2),
    )
    jax.block_until_ready(call(jnp.zeros((2, 8, 128))))
    pltpu.reset_tpu_interpret_mode_state()
    assert "RACE DETECTED" in capsys.readouterr().out


def test_time_blocks_are_8_to_256_steps_within_the_vmem_budget():
    """Worked by hand: a grid step holds, double-buffered, ``time_block``
    steps of every plane (a, b in; h out) of ``row_block`` × 128 float32;
    the most steps up to 256 halved until they fit 8 MiB."""
    want = {  # (form, row_block): steps (planes, bytes of one step)
        (pallas_tpu.REAL, 8): 256,  # 1 + 2: 24 KiB a step, 6 MiB
        (pallas_tpu.COMPLEX, 8): 128,  # 2 + 4: 48 KiB, 256 steps = 12 MiB
        (pallas_tpu.BLOCK, 8): 128,  # 4 + 4: 64 KiB
        (pallas_tpu.BLOCK, 32): 32,  # 256 KiB
        (pallas_tpu.BLOCK, 256): 8,  # 2 MiB: the floor, 16 MiB (row_block is the caller's)
    }
    for (form, row_block), steps in want.items():
        assert pallas_tpu._time_block(form, row_block) == steps, (form.name, row_block)


def test_bad_input_is_named():
    ones = jnp.ones((4, 2, 3))
    with pytest.raises(ValueError, match="time_block: expected a positive multiple of 8, got 12"):
        pallas_tpu.scan(ones, ones, ones[0], time_block=12)
    with pytest.raises(ValueError, match=r"h0: expected the shape of one step of b"):
        pallas_tpu.scan(ones, ones, ones[0, 0])
    with pytest.raises(ValueError, match=r"a: expected 2x2 blocks"):
        pallas_tpu.scan(jnp.ones((4, 2, 3, 2, 3)), jnp.ones((4, 2, 3, 2)), jnp.ones((2, 3, 2)))
    assert pallas_tpu.scan(ones[:0], ones[:0], ones[0]).shape == (0, 2, 3)


# --- through the engine, against the plain scan -----------------------------------------


def well_conditioned(params):
    """``params`` drawn by ``random_params`` (N(0, 0.5²)), made well
    conditioned as the cells' own inits are: every weight matrix ``w_*``
    scaled by 1/√fan-in, and S5's continuous eigenvalues in the left
    half-plane (Re Λ < 0, as its HiPPO-N init and any stable model).
    Otherwise wide cells' outputs reach 50 (LRU) to 5e3 (S6) at H = 130,
    where the derivative of sin in the tests' losses amplifies their
    rounding, and S5's states grow by up to e^{|Re Λ| Δ} a step: the float32
    scan itself then errs in the gradients by 9e-6 (LRU), 1e-3 (S6) and
    6e-5 (S5, T = 11) normwise against a float64 scan, an error no
    implementation can remove (the kernel's own: 3e-6, 8e-4 and 8e-5)."""
    params = {
        name: value / float(np.sqrt(value.shape[0])) if name.startswith("w_") else value
        for name, value in params.items()
    }
    if "lambda_re" in params:
        params["lambda_re"] = -jnp.abs(params["lambda_re"])
    return params


def unroll_both(name, rng, *, batch=(2, 3), num_steps=11, hidden=6, reverse=True, runs=None):
    """(pallas_tpu, scan) results of outputs, final and per-step carries and
    gradients by params, inputs and initial carry, with padding (lengths
    from 0 to T) and resets. ``runs``: that many runs with their own
    params under ``jax.vmap``."""
    cell = LINEAR_CELLS[name](hidden)
    draw = lambda: well_conditioned(random_params(cell, rng, D))  # noqa: E731
    params = (
        draw()
        if runs is None
        else jax.tree_util.tree_map(lambda *p: jnp.stack(p), *[draw() for _ in range(runs)])
    )
    xs, h0 = normal(rng, (*batch, num_steps, D)), random_carry(cell, rng, batch)
    lengths = jnp.asarray(rng.integers(0, num_steps + 1, batch)).at[(0,) * len(batch)].set(0)
    resets = jnp.asarray(rng.random((*batch, num_steps)) < 0.2)

    def results(impl):
        def unroll(p, x, h):
            kw = dict(seq_lengths=lengths, resets=resets, reverse=reverse, return_carries=True)
            return rj.unroll(cell, p, x, initial_carry=h, impl=impl, **kw)

        def loss(p, x, h):
            leaves = jax.tree_util.tree_leaves(unroll(p, x, h))
            return sum(jnp.sum(jnp.sin(leaf)) for leaf in leaves)

        both = lambda p, x, h: (unroll(p, x, h), jax.grad(loss, (0, 1, 2))(p, x, h))  # noqa: E731
        return jax.jit(both if runs is None else jax.vmap(both, (0, None, None)))(params, xs, h0)

    return results, lengths


@pytest.fixture
def small_time_blocks(monkeypatch):
    """Time blocks of 8 steps, so that T = 11 spans two."""
    monkeypatch.setattr(pallas_tpu, "MAX_TIME_BLOCK", 8)


@pytest.mark.parametrize("name", by_speed(LINEAR_CELLS))
def test_unroll_equals_the_scan(name, rng, tpu_interpret, small_time_blocks):
    results, lengths = unroll_both(name, rng)
    with tpu_interpret():
        got = results("pallas_tpu")
    want = results("scan")
    assert_close(got[0], want[0], VALUES)
    assert_close(got[1], want[1], GRADS)
    ys = np.asarray(got[0][1])
    assert np.all(ys[np.asarray(lengths)[..., None] <= np.arange(ys.shape[-2])] == 0.0)


@pytest.mark.parametrize("name", by_speed(["mingru", "lru", "d-linoss", "s6"], fast={"mingru"}))
def test_vmap_over_runs_with_their_own_params(name, rng, tpu_interpret, small_time_blocks):
    """A sweep: under ``jax.vmap`` the run axis is folded into the kernel's rows."""
    results, _ = unroll_both(name, rng, batch=(2,), runs=3)
    with tpu_interpret():
        got = results("pallas_tpu")
    assert_close(got, results("scan"), GRADS)


SHAPES = {  # batch, T, hidden
    "batch 1": ((1,), 11, 6),
    "T = 1": ((3,), 1, 6),
    "N not a multiple of 128, two row blocks": ((9,), 11, 130),
}


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", ["lru", "mingru", "d-linoss", "s6"])  # each form; S6's H·N units
def test_unroll_equals_the_scan_at_every_shape(name, shape, rng, tpu_interpret, small_time_blocks):
    batch, num_steps, hidden = SHAPES[shape]
    results, _ = unroll_both(name, rng, batch=batch, num_steps=num_steps, hidden=hidden)
    with tpu_interpret():
        got = results("pallas_tpu")
    want = results("scan")
    assert_close(got[0], want[0], VALUES)
    assert_close(got[1], want[1], GRADS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mingru", "s5", "linoss"])
def test_forward_direction(name, rng, tpu_interpret, small_time_blocks):
    """The others read in reverse (inputs flipped before the kernel); here in order."""
    results, _ = unroll_both(name, rng, reverse=False)
    with tpu_interpret():
        got = results("pallas_tpu")
    want = results("scan")
    assert_close(got[0], want[0], VALUES)
    assert_close(got[1], want[1], GRADS)


@pytest.mark.slow
def test_remat_segments_run_the_kernel(rng):
    """Pallas's generic interpreter here, not TPU interpret mode: its
    callbacks are effects, which ``jax.checkpoint`` (a remat segment) cannot
    partially evaluate. The Mosaic kernel has none; it lowers for TPU inside
    remat segments (tests/test_lowering.py)."""
    cell = rj.cells.lru(6, state_size=5)
    params, xs = random_params(cell, rng, D), normal(rng, (2, 11, D))

    def loss(params, **kw):
        return jnp.sum(jnp.sin(rj.unroll(cell, params, xs, seq_lengths=[11, 6], **kw)[1]))

    kernel = functools.partial(loss, impl="pallas_tpu", remat=4)
    assert "pallas_call" in str(jax.make_jaxpr(jax.grad(kernel))(params))
    got = jax.jit(jax.grad(kernel))(params)
    assert_close(got, jax.jit(jax.grad(functools.partial(loss, impl="scan")))(params), GRADS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mingru", "linoss"])  # per unit; per component of a block
def test_zoneout_through_the_kernel(name, rng, tpu_interpret):
    cell = LINEAR_CELLS[name](6)
    params, xs = random_params(cell, rng, D), normal(rng, (2, 11, D))
    kw = dict(zoneout=0.4, key=jax.random.key(3), reverse=True)
    with tpu_interpret():
        got = jax.jit(lambda p: rj.unroll(cell, p, xs, impl="pallas_tpu", **kw))(params)
    want = jax.jit(lambda p: rj.unroll(cell, p, xs, impl="scan", **kw))(params)
    assert_close(got, want, VALUES)


# --- where the table takes it -----------------------------------------------------------


def choice(cell, platform, monkeypatch, uses=(), impl="auto", xs_dtype=jnp.float32):
    monkeypatch.setattr(jax, "default_backend", lambda: platform)
    cell = rj.cells.with_defaults(cell)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), D))
    xs = jax.ShapeDtypeStruct((20, 2, D), xs_dtype)
    call = backends.Call(cell, params, xs, rj.Engine(impl=impl), frozenset(uses))
    return backends.choose(call).name


def test_auto_takes_it_on_tpus_for_linear_cells_only(monkeypatch):
    for name, make in LINEAR_CELLS.items():
        assert choice(make(6), "tpu", monkeypatch) == "pallas_tpu", name
        assert choice(make(6), "cpu", monkeypatch) != "pallas_tpu", name
        assert choice(make(6), "gpu", monkeypatch) != "pallas_tpu", name
    assert choice(rj.cells.lstm(6), "tpu", monkeypatch) != "pallas_tpu"
    assert choice(rj.cells.lru(6), "tpu", monkeypatch, uses={"zoneout"}) == "scan"


@pytest.mark.parametrize(
    "cell, platform, kw, reason",
    [
        (rj.cells.lstm(6), "tpu", {}, "it needs a cell linear in its carry"),
        (rj.cells.mingru(6), "gpu", {}, "the kernel lowers for TPUs (Mosaic)"),
        (rj.cells.lru(6), "tpu", dict(uses={"zoneout"}), "the lru cell's state is complex"),
        (LINEAR_CELLS["s5"](6), "tpu", dict(uses={"zoneout"}), "the s5 cell's state is complex"),
        (rj.cells.mingru(6), "tpu", dict(uses={"no_hoist"}), "`hoist=False`"),
    ],
)
def test_an_explicit_request_that_cannot_run_says_why(cell, platform, kw, reason, monkeypatch):
    with pytest.raises(ValueError, match="impl: 'pallas_tpu' cannot be used here") as error:
        choice(cell, platform, monkeypatch, impl="pallas_tpu", **kw)
    assert reason in str(error.value)


def test_float64_is_refused_with_a_reason(monkeypatch):
    with pytest.raises(ValueError, match=r"Mosaic computes it in float32, got \['float64'\]"):
        choice(rj.cells.mingru(6), "tpu", monkeypatch, impl="pallas_tpu", xs_dtype=jnp.float64)


# --- a sweep over a mesh --------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_over_a_mesh():
    """Runs sharded over 4 devices (``vmap(spmd_axis_name=...)``, as
    ``rj.distributed`` does): the values equal the unsharded scan's (here the
    interpreted kernel, plain XLA, which XLA partitions itself); lowered for
    TPU the Mosaic kernel is a custom-partitioned op split by rows (XLA cannot
    partition a Mosaic kernel), and the kernel each device then runs lowers
    for TPU in that fully manual context."""
    child = subprocess.run(
        [sys.executable, __file__, "mesh"], capture_output=True, text=True, timeout=600
    )
    assert child.returncode == 0, child.stdout + child.stderr
    report = json.loads(child.stdout.splitlines()[-1])
    assert report["max_error"] < GRADS
    assert report["partitioned_ops"] == 2 and report["tpu_calls_per_device"] == 2
    assert report["row_axes"] == ["runs", None]  # 32 rows split 4 ways in blocks of 8; 8 not


def _mesh_child():
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", 4)
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("runs",))
    rng = np.random.default_rng(0)
    cell = rj.cells.mingru(16)
    runs = [random_params(cell, rng, D) for _ in range(4)]
    params = jax.tree_util.tree_map(lambda *p: jnp.stack(p), *runs)
    xs = normal(rng, (2, 20, D))

    def sweep(impl):
        loss = lambda p: jnp.sum(jnp.sin(rj.unroll(cell, p, xs, impl=impl)[1]))  # noqa: E731
        return jax.vmap(jax.value_and_grad(loss), spmd_axis_name="runs")

    sharded = jax.device_put(params, NamedSharding(mesh, P("runs")))
    partitioned = jax.jit(sweep("pallas_tpu"))
    got, want = partitioned(sharded), jax.jit(sweep("scan"))(params)
    errors = jax.tree_util.tree_map(
        lambda g, w: float(jnp.abs(g - w).max() / max(1.0, float(jnp.abs(w).max()))), got, want
    )
    for_tpu = partitioned.trace(sharded).lower(lowering_platforms=("tpu",)).as_text()
    per_device = jax.shard_map(  # Pallas's outputs declare no varying mesh axes
        sweep("pallas_tpu"), mesh=mesh, in_specs=P("runs"), out_specs=P("runs"), check_vma=False
    )
    exported = jax.export.export(jax.jit(per_device), platforms=["tpu"])(sharded)
    planes = [
        jax.ShapeDtypeStruct(
            (16, rows, 128), jnp.float32, sharding=NamedSharding(mesh, P(None, "runs"))
        )
        for rows in (32, 8)
    ]
    report = dict(
        max_error=max(jax.tree_util.tree_leaves(errors)),
        partitioned_ops=for_tpu.count("CustomSPMDPartitioning"),
        tpu_calls_per_device=exported.mlir_module().count("tpu_custom_call"),
        row_axes=[pallas_tpu._row_axes(mesh, plane, 8) for plane in planes],
    )
    print(json.dumps(report))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    {"mesh": _mesh_child}[sys.argv[1]]()
