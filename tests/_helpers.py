"""Helpers the tests share: the cell zoo, test data drawn by NumPy, and
tolerance checks (``from _helpers import make, normal, ...``).

Speed: on CPU every new shape of ``jax.random.normal`` and every
``cell.init`` costs about a second of compile, so test data and the params
of numerical tests come from NumPy; ``cell.init`` runs only where the
initialisation itself is under test.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

import recurrent_jax as rj

# --- the cell zoo ----------------------------------------------------------

H = 4  # hidden size of the zoo
P = 3  # projection size of the LSTMP entries
D = 3  # input size used by most tests

CELLS = {
    "elman-tanh": lambda **o: rj.cells.elman(H, **o),
    "elman-relu": lambda **o: rj.cells.elman(H, activation="relu", **o),
    "lstm": lambda **o: rj.cells.lstm(H, **o),
    "lstm-single": lambda **o: rj.cells.lstm(H, bias="single", **o),
    "lstm-none": lambda **o: rj.cells.lstm(H, bias="none", **o),
    "lstm-proj": lambda **o: rj.cells.lstm(H, proj_size=P, **o),
    "lstm-peephole": lambda **o: rj.cells.lstm(H, peephole=True, **o),
    "lstm-ln": lambda **o: rj.cells.lstm(H, layer_norm=True, **o),
    "lstm-all": lambda **o: rj.cells.lstm(H, proj_size=P, peephole=True, layer_norm=True, **o),
    "gru": lambda **o: rj.cells.gru(H, **o),
    "gru-single": lambda **o: rj.cells.gru(H, bias="single", **o),
    "gru-none": lambda **o: rj.cells.gru(H, bias="none", **o),
    "gru-before": lambda **o: rj.cells.gru(H, reset_after=False, **o),
    "gru-before-single": lambda **o: rj.cells.gru(H, reset_after=False, bias="single", **o),
    "mgu": lambda **o: rj.cells.mgu(H, **o),
}

# The state-space cells, linear in the carry: in the engine's contract tests
# beside the zoo (their equations meet float64 oracles in test_ssm.py and test_s6.py).
STATE_SPACE_CELLS = {
    "s4d": lambda **o: rj.cells.s4d(H, state_size=4, **o),
    "s5": lambda **o: rj.cells.s5(H, state_size=4, blocks=2, **o),
    "linoss": lambda **o: rj.cells.linoss(H, state_size=2, **o),
    "d-linoss": lambda **o: rj.cells.linoss(H, state_size=2, damping=True, **o),
    "s6": lambda **o: rj.cells.s6(H, state_size=3, **o),
    "s6-gate": lambda **o: rj.cells.s6(H, state_size=2, dt_rank=2, gate=True, **o),
}

# A smaller set covering every family and option, for the engine matrices.
# Configs whose data is downloaded: their smoke variants run on fixtures in
# the same formats (tests/test_benchmark_configs.py), never on the network.
DOWNLOADED_CONFIGS = {"sequential_mnist", "imdb", "ptb_word", "ptb_char", "wikitext2"}

FAMILIES = ["elman-tanh", "lstm", "lstm-all", "gru", "gru-before", "mgu", *STATE_SPACE_CELLS]

_KEY_SHAPE = jax.ShapeDtypeStruct((2,), jnp.uint32)


def param_shapes(cell, input_size=D):
    """The params' ShapeDtypeStructs, without running (or compiling) init."""
    return jax.eval_shape(lambda k: cell.init(k, input_size), _KEY_SHAPE)


def random_params(cell, rng, input_size=D):
    """Params of the cell's structure with random values away from every
    default: N(0, 0.5²) weights, biases, peepholes; LayerNorm scales 1 ± 0.3."""

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        base, scale = (1.0, 0.3) if "scale" in name else (0.0, 0.5)
        return jnp.asarray(base + scale * rng.standard_normal(s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(draw, param_shapes(cell, input_size))


def make(name, rng, input_size=D, **options):
    """(cell, random params) for a zoo or state-space entry."""
    cell = (CELLS | STATE_SPACE_CELLS)[name](**options)
    return cell, random_params(cell, rng, input_size)


def normal(rng, shape, scale=1.0):
    """float32 test data drawn by NumPy."""
    return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


def random_carry(cell, rng, batch_shape, scale=0.5):
    """A nonzero carry with the structure of ``cell.initial_carry``."""
    zeros = cell.initial_carry(tuple(batch_shape))
    return jax.tree_util.tree_map(lambda a: normal(rng, a.shape, scale), zeros)


def _as_float64(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def assert_trees_close(got, want, *, atol, rtol=0.0):
    """Same tree structure, leaf shapes, and values within atol + rtol·|want|
    (compared in float64, so trees of different dtypes compare by value)."""
    got, want = _as_float64(got), _as_float64(want)
    chex.assert_trees_all_equal_shapes(got, want)
    chex.assert_trees_all_close(got, want, atol=atol, rtol=rtol)


# --- a backend against the scan, case by case ---------------------------------------


def scan_and(impl: str, cell, params, xs, cases: dict) -> dict:
    """{case: (scan's (final, ys), ``impl``'s (final, ys))} of ``rj.unroll``
    with each case's keywords, all in one jit."""

    @jax.jit
    def run(params, xs):  # the cases' keywords stay static (flags) or constants
        return {
            name: tuple(rj.unroll(cell, params, xs, impl=i, **kw) for i in ("scan", impl))
            for name, kw in cases.items()
        }

    return run(params, xs)


def assert_cases_agree(results: dict, tol: float) -> None:
    """Each case of ``scan_and``: the backend's final carry and outputs
    within ``tol`` of the scan's scale (at least 1), in the scan's dtypes."""
    for name, (want, got) in results.items():
        scale = max(float(jnp.abs(a).max()) for a in jax.tree_util.tree_leaves(want))
        assert_trees_close(got, want, atol=tol * max(scale, 1.0))
        assert got[1].dtype == want[1].dtype and got[0].dtype == want[0].dtype, name


def scaled_runs(params, runs: int):
    """``runs`` copies of ``params`` stacked on a leading axis, copy i scaled
    by 1 + 0.1 i: a sweep's run axis whose runs differ."""

    def stack(p):
        scales = 1.0 + 0.1 * jnp.arange(runs, dtype=p.dtype)
        return p[None] * scales.reshape(-1, *(1,) * p.ndim)

    return jax.tree_util.tree_map(stack, params)


def assert_vmapped_equals_each_run(fn, reference, args, atol: float) -> None:
    """Run i of ``jit(vmap(fn))`` over the leading axis of every leaf of
    ``args`` equals ``reference`` of run i's arguments alone."""
    got = jax.jit(jax.vmap(fn))(*args)
    alone = jax.jit(reference)
    for i in range(jax.tree_util.tree_leaves(args)[0].shape[0]):
        run_i = lambda tree, i=i: jax.tree_util.tree_map(lambda a: a[i], tree)  # noqa: E731
        assert_trees_close(run_i(got), alone(*run_i(args)), atol=atol)


def auto_choice(cell, xs_shape, **uses) -> str:
    """The backend ``impl="auto"`` picks for ``cell`` on time-major inputs of
    ``xs_shape`` (T, B, D) with the ``backends.OPTIONS`` set true in ``uses``."""
    xs = jax.ShapeDtypeStruct(xs_shape, jnp.float32)
    uses = frozenset(k for k in uses if uses[k])
    shapes = param_shapes(cell, xs_shape[-1])
    call = rj.backends.Call(rj.cells.with_defaults(cell), shapes, xs, rj.Engine(), uses)
    return rj.backends.choose(call).name


def auto_backend_for_plain_cells() -> str:
    """What ``impl="auto"`` runs a plain fp32 LSTM/GRU with here: the CPU
    extension on a CPU that built it, else the fused VJP."""
    from recurrent_jax import cpu

    on_cpu = jax.default_backend() == "cpu"
    return "cpu" if on_cpu and cpu.unavailable() is None else "fused"


def leaf_dtypes(tree):
    return {jnp.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(tree)}


def one_line(argv, capsys) -> str:
    """The command's error: exit 2 and one line on stderr, which it returns."""
    from recurrent_jax import cli  # the experiment layer loads on first use

    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("recurrent-jax: error: ") and "\n" not in err, err
    return err


# A config file training the `arrays` task on a file of one's own (smoke sizes).
ARRAYS_CONFIG = """
from recurrent_jax.train.config import base_config, shrink_to_smoke

def get_config(arg=None):
    config = base_config("arrays", name="mine")
    config.data.update(path=arg or "data.npz", batch_size=8, eval_size=8)
    config.model.update(hidden_size=8)
    shrink_to_smoke(config)
    config.lock()
    return config
"""
