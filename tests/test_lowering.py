"""Accelerator paths proven on a CPU host by cross-platform export: nothing
runs, everything lowers.

The library chooses backends by the host it traces on, so each export runs
with ``jax.default_backend`` reporting the target (as on a GPU or TPU host);
the export itself lowers for that platform only (``jax.export``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import pytest
from _helpers import DOWNLOADED_CONFIGS

import recurrent_jax as rj
from recurrent_jax import pallas

TRITON_CALL = "__gpu$xla.gpu.triton"
ALLOW_TRITON = [jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)]
PLATFORM = {"cuda": "gpu", "tpu": "tpu"}


@contextlib.contextmanager
def host(platform: str):
    """Traces as on a host whose default backend is ``platform``'s."""
    with mock.patch.object(jax, "default_backend", lambda: PLATFORM[platform]):
        yield


def export(fn, platform, *args, **kwargs):
    """The text of ``fn`` lowered for ``platform`` (nothing executed)."""
    with host(platform):
        exported = jax.export.export(jax.jit(fn), platforms=[platform], **kwargs)(*args)
    return exported.mlir_module()


VARIANTS = {
    "lstm": dict(),
    "lstm-single-bias": dict(bias="single"),
    "lstm-peephole": dict(peephole=True),
    "lstm-layer-norm": dict(layer_norm=True),
    "lstm-proj": dict(proj_size=32),
    "elman": dict(),
    "elman-relu": dict(activation="relu"),
    "gru": dict(),
}


def kernel_case(name, hidden, steps, batch, dtype):
    family = name.split("-")[0]
    cell = getattr(rj.cells, family)(hidden, dtype=dtype, **VARIANTS[name])
    params = cell.init(jax.random.key(0), 8)
    xs = jnp.ones((batch, steps, 8))

    def forward(p, x):
        return rj.unroll(cell, p, x, impl="pallas")[1]

    def gradient(p, x):
        return jax.grad(lambda p, x: jnp.sum(forward(p, x) ** 2), argnums=(0, 1))(p, x)

    return cell, params, xs, forward, gradient


def assert_kernels(text, count):
    """``count`` Triton kernel calls, no Mosaic GPU call, no interpret-mode loop."""
    assert text.count(TRITON_CALL) == count
    assert "mosaic" not in text.lower() and "stablehlo.while" not in text


SHAPES = [
    (name, hidden, dtype)
    for name in ("lstm", "elman", "gru")
    for hidden in (32, 64, 128, 256, 512)
    for dtype in (jnp.float32, jnp.bfloat16)
] + [(name, 64, jnp.float32) for name in VARIANTS if name not in ("lstm", "elman", "gru")]


@pytest.mark.parametrize(
    "name, hidden, dtype", SHAPES, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_kernel_lowers_for_cuda_or_is_refused_with_a_reason(name, hidden, dtype):
    cell, params, xs, forward, gradient = kernel_case(name, hidden, 64, 32, dtype)
    reasons = pallas.gpu_blockers(params, dtype)
    if reasons:
        with pytest.raises(ValueError, match="impl: 'pallas' cannot be used here") as error:
            export(forward, "cuda", params, xs, disabled_checks=ALLOW_TRITON)
        assert all(reason in str(error.value) for reason in reasons)
        return
    assert_kernels(export(forward, "cuda", params, xs, disabled_checks=ALLOW_TRITON), 1)
    assert_kernels(export(gradient, "cuda", params, xs, disabled_checks=ALLOW_TRITON), 2)


def test_which_shapes_fit():
    """The budget, worked by hand: W_hh (H, G) plus 16 rows of h and hh."""

    def fits(name, h, dtype):
        w_hh = jax.ShapeDtypeStruct((h, {"lstm": 4, "elman": 1, "gru": 3}[name] * h), dtype)
        return not pallas.gpu_blockers({"w_ih": None, "w_hh": w_hh}, dtype)

    assert fits("lstm", 64, jnp.float32)  # (64*256 + 16*320) * 4 = 86,016 bytes
    assert not fits("lstm", 128, jnp.float32)  # 303,104
    assert fits("lstm", 128, jnp.bfloat16)  # 151,552
    assert not fits("lstm", 256, jnp.bfloat16)  # 544,768
    assert fits("elman", 128, jnp.float32) and not fits("elman", 256, jnp.float32)
    assert fits("elman", 256, jnp.bfloat16) and not fits("elman", 512, jnp.bfloat16)
    assert not any(fits("gru", h, jnp.bfloat16) for h in (32, 64))  # 3H is no power of two


@pytest.mark.parametrize("steps", [1, 100, 4096])
@pytest.mark.parametrize("batch", [16, 40, 64], ids=["1 tile", "3 tiles", "4 tiles"])
def test_kernel_lowers_at_any_length_and_batch(steps, batch):
    _, params, xs, forward, gradient = kernel_case("lstm", 64, steps, batch, jnp.float32)
    assert_kernels(export(forward, "cuda", params, xs, disabled_checks=ALLOW_TRITON), 1)
    assert_kernels(export(gradient, "cuda", params, xs, disabled_checks=ALLOW_TRITON), 2)


def test_kernel_lowers_under_vmap_over_runs():
    """A sweep: each run its own weights, the run axis a grid axis of one kernel."""
    _, params, xs, forward, gradient = kernel_case("lstm", 32, 50, 16, jnp.float32)
    runs = jax.tree_util.tree_map(lambda a: jnp.stack([a] * 8), params)
    for fn, count in ((forward, 1), (gradient, 2)):
        text = export(
            jax.vmap(fn, in_axes=(0, None)), "cuda", runs, xs, disabled_checks=ALLOW_TRITON
        )
        assert_kernels(text, count)


def test_on_other_platforms_the_kernel_runs_interpreted():
    """Lowered for CPU (or TPU) the same call is Pallas's interpret loop."""
    _, params, xs, forward, _ = kernel_case("lstm", 32, 10, 16, jnp.float32)
    for platform in ("cpu", "tpu"):
        lowered = jax.jit(forward).trace(params, xs).lower(lowering_platforms=(platform,))
        text = lowered.as_text()
        assert TRITON_CALL not in text and "while" in text


def test_unconcatenated_keeps_values_and_leaves_no_wide_concatenate():
    """Oracle: the function itself; and its jaxpr holds no concatenate of > 2."""

    def gates_vjp(x_parts, ct):
        def f(parts):
            i, f, g, o = jnp.split(jnp.tanh(jnp.concatenate(parts, -1)), 4, -1)
            return jax.nn.sigmoid(i) * g + f * o

        return jax.vjp(f, x_parts)[1](ct)[0]

    parts = [jnp.full((4, 8), v) for v in (0.1, -0.2, 0.3, 0.5)]
    ct = jnp.linspace(-1, 1, 32).reshape(4, 8)
    want = gates_vjp(parts, ct)
    got = pallas.unconcatenated(gates_vjp)(parts, ct)
    for a, b in zip(got, want, strict=True):
        assert jnp.array_equal(a, b)
    wide = [
        e
        for e in jax.make_jaxpr(pallas.unconcatenated(gates_vjp))(parts, ct).jaxpr.eqns
        if e.primitive.name == "concatenate"
    ]
    assert not wide


# --- whole training functions -------------------------------------------------------------


def _config_names():
    configs = Path(__file__).parents[1] / "configs"
    return sorted({p.stem for p in configs.glob("*.py")} - DOWNLOADED_CONFIGS)


def _exported_training_function(name, platform, cell=None):
    """The text of config ``name``'s smoke training function (its model's
    cell replaced by ``cell``) exported for ``platform`` from its host."""
    pytest.importorskip("ml_collections")
    pytest.importorskip(
        {"digits": "sklearn", "japanese_vowels": "aeon", "airline": "aeon"}.get(name, "jax")
    )
    from recurrent_jax.train import config_files, core, from_config_dict

    config_dict = config_files.load_config(f"{name}:smoke")
    if cell is not None:
        with config_dict.unlocked():
            config_dict.model.cell = cell
    config = from_config_dict(config_dict)
    with host(platform):
        train = core.make_train(config)
    return config, export(train, platform, core.default_hparams(config), jax.random.key(0))


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("name", _config_names())
def test_every_configs_training_function_exports(name, platform):
    """``rj.train.make_train`` of each config's smoke variant lowers for the
    accelerator with no CPU-only custom call (the C++ backend's FFI targets);
    for TPU, a config whose cell is linear in its carry runs the TPU kernel."""
    from recurrent_jax.cpu.build import TARGETS

    config, text = _exported_training_function(name, platform)
    assert not [target for target in TARGETS if target in text]
    assert "stablehlo.custom_call @recurrent_jax" not in text
    linear = getattr(config.model, "KIND", "") == "rnn" and config.model.cell in CONFIG_CELLS
    assert (TPU_CALL in text) == (platform == "tpu" and linear)


# --- every backend that claims a platform ------------------------------------------------


CLAIMS = {  # cells each backend is for: a plain LSTM, a cell linear in its carry, a
    # time-invariant one (the FFT convolution), a selective one (the selective scan)
    "lstm": lambda: rj.cells.lstm(32),
    "mingru": lambda: rj.cells.mingru(32),
    "s4d": lambda: rj.cells.s4d(32, state_size=8),
    "s6": lambda: rj.cells.s6(32, state_size=8),
}


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("impl", list(rj.backends.TABLE))
@pytest.mark.parametrize("cell_name", list(CLAIMS))
def test_every_backend_that_takes_a_call_lowers_for_the_platform(impl, cell_name, platform):
    """A backend either refuses the call on that platform's host (a reason)
    or its forward and gradient lower there with no CPU-only custom call.

    Two things only a host of the platform lowers, left out here: cuDNN's
    custom call needs the CUDA jaxlib (``jaxlib.gpu_rnn``) to be traced at
    all, and DEER's non-convergence warning is a host callback, which lowers
    for the host's own platform only (patched out; the rest must lower)."""
    from recurrent_jax.cpu.build import TARGETS

    if impl == "cudnn" and platform == "cuda" and jax.default_backend() != "gpu":
        pytest.skip("cuDNN's RNN call is traced by the CUDA jaxlib only")

    cell = CLAIMS[cell_name]()
    params, xs = cell.init(jax.random.key(0), 8), jnp.ones((16, 40, 8))

    def loss(p, x):
        return jnp.sum(rj.unroll(cell, p, x, impl=impl)[1] ** 2)

    quiet = mock.patch.object(jax.debug, "callback", lambda *a, **k: None)
    with quiet if impl == "deer" else contextlib.nullcontext():
        try:
            with host(platform):
                jax.eval_shape(loss, params, xs)
        except ValueError as error:
            assert f"impl: {impl!r} cannot be used here" in str(error)
            return
        checks = ALLOW_TRITON + [jax.export.DisabledSafetyCheck.custom_call("cudnn_rnn")]
        for fn in (loss, jax.grad(loss)):
            text = export(fn, platform, params, xs, disabled_checks=checks)
            assert not [target for target in TARGETS if target in text]


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: rj.cells.s5(32, state_size=32, blocks=2),  # complex diagonal coefficients
        lambda: rj.cells.linoss(32, state_size=16, damping=True),  # 2×2 blocks
    ],
    ids=["s5", "d-linoss"],
)
def test_state_space_cells_lower_through_the_parallel_scans(make, platform):
    """What ``auto`` picks for a state-space cell at T = 512 on a GPU host
    (the associative scan) or a TPU host (the TPU kernel, whose lowering the
    tests below prove), and the associative and chunked scans: forward and
    gradient lower for the platform."""
    cell = make()
    params, xs = cell.init(jax.random.key(0), 8), jnp.ones((4, 512, 8))

    def loss(p, x, impl):
        return jnp.sum(rj.unroll(cell, p, x, impl=impl, chunk_length=64)[1] ** 2)

    with host(platform):
        lowered = jax.jit(loss, static_argnums=2).lower(params, xs, "auto")
    auto = {"cuda": "associative", "tpu": "pallas_tpu"}[platform]
    assert f"recurrent_jax.{auto}" in lowered.as_text(debug_info=True)
    for impl in ("associative", "chunked"):
        forward = lambda p, x, impl=impl: loss(p, x, impl)  # noqa: E731
        for fn in (forward, jax.grad(forward)):
            assert "stablehlo.custom_call" not in export(fn, platform, params, xs)


# --- the TPU kernel for cells linear in their carry ----------------------------------------

TPU_CALL = "tpu_custom_call"
LINEAR_CELLS = {  # cell: (constructor of hidden size, the kernel's coefficient form)
    "lru": (lambda h: rj.cells.lru(h, state_size=h), "complex"),
    "rglru": (rj.cells.rglru, "real"),
    "mingru": (rj.cells.mingru, "real"),
    "s5": (lambda h: rj.cells.s5(h, state_size=16, blocks=2), "complex"),
    "d-linoss": (lambda h: rj.cells.linoss(h, state_size=16, damping=True), "block"),
    "linoss": (lambda h: rj.cells.linoss(h, state_size=16), "block"),
    "s4d": (lambda h: rj.cells.s4d(h, state_size=16), "complex"),
    "s6": (lambda h: rj.cells.s6(h, state_size=16), "real"),
    "minlstm-log": (lambda h: rj.cells.minlstm(h, log_space=True), "real"),
    "mingru-log": (lambda h: rj.cells.mingru(h, log_space=True), "real"),
}
# In the default suite: the LRU, RG-LRU, minGRU and S5, and D-LinOSS
# for the 2×2 blocks; the others (the same three forms) in the slow suite.
FAST_LINEAR = {"lru", "rglru", "mingru", "s5", "d-linoss"}


def linear_cells():
    """``LINEAR_CELLS``' names as pytest params, outside ``FAST_LINEAR`` slow."""
    slow = [pytest.mark.slow]
    return [pytest.param(n, marks=[] if n in FAST_LINEAR else slow) for n in LINEAR_CELLS]


TPU_SHAPES = {  # (batch, T, hidden)
    "T not a multiple of the block": ((4,), 300, 64),
    "N not a multiple of 128": ((3,), 40, 130),
    "batch 1": ((1,), 17, 32),
}


def linear_case(name, batch, steps, hidden, impl="pallas_tpu"):
    """(params, xs) as shapes (export needs no values), the gradient of a
    loss through ``rj.unroll`` with padding, resets and reverse, and the
    kernel's form."""
    make, form = LINEAR_CELLS[name]
    cell = make(hidden)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), 8))
    xs = jax.ShapeDtypeStruct((*batch, steps, 8), jnp.float32)
    lengths = jnp.full(batch, steps // 2)
    resets = jnp.broadcast_to(jnp.arange(steps) % 7 == 3, (*batch, steps))

    def loss(p, x):
        kw = dict(seq_lengths=lengths, resets=resets, reverse=True, impl=impl)
        final, ys = rj.unroll(cell, p, x, **kw)
        return jnp.sum(ys**2) + jnp.sum(final**2)

    return params, xs, jax.value_and_grad(loss, argnums=(0, 1)), form


def assert_tpu_kernels(text, form):
    """The forward kernel and its adjoint, Mosaic custom calls; no
    interpret-mode loop and no host callback."""
    assert text.count(TPU_CALL) == 2
    assert f'kernel_name = "recurrent_jax_linear_{form}"' in text
    assert f'kernel_name = "recurrent_jax_linear_{form}_adjoint"' in text
    assert "stablehlo.while" not in text and "callback" not in text


@pytest.mark.parametrize("shape", list(TPU_SHAPES))
@pytest.mark.parametrize("name", linear_cells())
def test_tpu_kernel_lowers_forward_and_gradient(name, shape):
    params, xs, value_and_grad, form = linear_case(name, *TPU_SHAPES[shape])
    assert_tpu_kernels(export(value_and_grad, "tpu", params, xs), form)


@pytest.mark.parametrize("name", linear_cells())
def test_tpu_kernel_lowers_under_vmap_over_runs(name):
    """A sweep: each run its own weights, the run axis folded into the kernel's rows."""
    params, xs, value_and_grad, form = linear_case(name, (2,), 20, 16)
    runs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((3, *a.shape), a.dtype), params)
    assert_tpu_kernels(export(jax.vmap(value_and_grad, in_axes=(0, None)), "tpu", runs, xs), form)


@pytest.mark.parametrize("name", linear_cells())
def test_auto_chooses_the_tpu_kernel_on_tpu_hosts_only(name):
    """``impl="auto"`` as traced on a TPU host is the kernel; traced on a CPU
    host and exported for TPU it is the host's choice (here the scan)."""
    params, xs, value_and_grad, form = linear_case(name, (2,), 20, 16, impl="auto")
    assert_tpu_kernels(export(value_and_grad, "tpu", params, xs), form)
    _, _, traced_on_cpu, _ = linear_case(name, (2,), 20, 16, impl="auto")  # a new trace
    exported = jax.export.export(jax.jit(traced_on_cpu), platforms=["tpu"])(params, xs)
    assert TPU_CALL not in exported.mlir_module()


def test_tpu_kernel_lowers_in_remat_segments():
    """``remat=k``: a scan over segments, each running the kernel; the
    backward recomputes a segment's forward (the kernel again) before its
    adjoint."""
    cell = rj.cells.lru(16, state_size=16)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), 8))
    xs = jax.ShapeDtypeStruct((2, 40, 8), jnp.float32)

    def loss(p, x):
        return jnp.sum(rj.unroll(cell, p, x, impl="pallas_tpu", remat=8)[1] ** 2)

    text = export(jax.grad(loss), "tpu", params, xs)
    assert text.count('kernel_name = "recurrent_jax_linear_complex"') == 2
    assert text.count('kernel_name = "recurrent_jax_linear_complex_adjoint"') == 1
    assert text.count(TPU_CALL) == 3 and "callback" not in text


CONFIG_CELLS = {  # model.cell: the form of the coefficients the kernel gets
    "lru": "complex",
    "rglru": "real",
    "mingru": "real",
    "minlstm": "real",
    "s4d": "complex",
    "s5": "complex",
    "linoss": "block",
    "s6": "real",
    "mamba": "real",  # Mamba blocks, whose S6 runs on the kernel
}
# Every cell on the adding task, and each other task with one cell.
CONFIG_CASES = [("adding", cell) for cell in CONFIG_CELLS] + [
    ("parity", "mingru"),
    ("copy", "s5"),
    ("char_lm", "linoss"),
    ("digits", "s6"),
]


def test_every_cell_a_config_names_that_the_kernel_serves_is_listed():
    """``CONFIG_CELLS`` is every registry cell linear in its carry and every
    block of them, so that a new one joins the export tests below."""
    from recurrent_jax import mamba

    linear = {name for name in rj.cells.REGISTRY if rj.cells.linear_in_carry(name)}
    assert set(CONFIG_CELLS) == linear | set(mamba.BLOCKS)


def test_a_configs_training_function_with_a_linear_cell_runs_the_tpu_kernel():
    _, text = _exported_training_function("adding", "tpu", cell="lru")
    assert 'kernel_name = "recurrent_jax_linear_complex_adjoint"' in text


@pytest.mark.slow
@pytest.mark.parametrize("name, cell", CONFIG_CASES)
def test_configs_with_a_linear_cell_run_the_tpu_kernel(name, cell):
    """The config's smoke training function, its model's cell replaced, as
    traced on a TPU host: the kernel and its adjoint, the form the cell's."""
    _, text = _exported_training_function(name, "tpu", cell=cell)
    assert f'kernel_name = "recurrent_jax_linear_{CONFIG_CELLS[cell]}_adjoint"' in text
