"""Flax linen and NNX cells: rj reproduces their outputs within 1e-5 and the
round trips flax -> rj -> flax are exact; NNX GRUCell's missing b_hn and
linen GRUCell's reset-after form raise clear errors."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj
from recurrent_jax import interop

ATOL = 1e-5
D, H, T, B = 3, 4, 5, 2


def perturb(tree, seed):
    """Every leaf (biases included) replaced by N(0, 0.5²) values."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype), tree
    )


def inputs(seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((B, T, D)), jnp.float32)


def linen_params(cell, seed):
    shapes = jax.eval_shape(
        lambda: cell.init(
            jax.random.PRNGKey(0),
            cell.initialize_carry(jax.random.PRNGKey(0), (B, D)),
            jnp.zeros((B, D)),
        )
    )
    return perturb(shapes["params"], seed)


def linen_outputs(cell, params, x):
    return jax.jit(fnn.RNN(cell).apply)({"params": {"cell": params}}, x)


def rj_outputs(layer, params, x):
    return jax.jit(layer.apply)({"params": params}, x)


LINEN = {
    "LSTMCell": lambda: fnn.LSTMCell(H),
    "OptimizedLSTMCell": lambda: fnn.OptimizedLSTMCell(H),
    "GRUCell": lambda: fnn.GRUCell(H),
    "SimpleCell-tanh": lambda: fnn.SimpleCell(H),
    "SimpleCell-relu": lambda: fnn.SimpleCell(H, activation_fn=jax.nn.relu),
}


@pytest.mark.parametrize("name", list(LINEN))
def test_linen_cells(name):
    cell = LINEN[name]()
    params = linen_params(cell, seed=len(name))
    layer, rj_params = interop.from_flax_linen({"params": params}, cell)
    assert isinstance(layer, rj.nn.RNN)
    x = inputs()
    np.testing.assert_allclose(
        rj_outputs(layer, rj_params, x), linen_outputs(cell, params, x), rtol=0, atol=ATOL
    )
    back = interop.to_flax_linen(rj_params, cell, layer=layer)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)  # exact round trip


def test_linen_from_torch_shaped_params():
    """rj params with two biases (PyTorch's) fold into linen's layout."""
    cell = rj.cells.gru(H)
    rj_params = perturb(jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), D)), 1)
    flax_params = interop.to_flax_linen(rj_params)
    x = inputs(1)
    ours = rj_outputs(rj.nn.RNN(cell), rj_params, x)
    np.testing.assert_allclose(
        ours, linen_outputs(fnn.GRUCell(H), flax_params, x), rtol=0, atol=ATOL
    )


def test_linen_errors():
    cell = rj.cells.gru(H, reset_after=False)
    params = perturb(jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), D)), 2)
    with pytest.raises(ValueError, match="flax.linen.GRUCell applies the GRU reset gate after"):
        interop.to_flax_linen(params, reset_after=False)
    with pytest.raises(ValueError, match="activation_fn='sigmoid'"):
        interop.from_flax_linen(
            linen_params(fnn.SimpleCell(H), 0), fnn.SimpleCell(H, activation_fn=jax.nn.sigmoid)
        )
    with pytest.raises(ValueError, match="expected the params of a Flax linen"):
        interop.from_flax_linen({"dense": {"kernel": jnp.zeros((2, 2))}})


# --- NNX -------------------------------------------------------------------

nnx = pytest.importorskip("flax.nnx")

NNX_TYPES = {
    name: getattr(nnx, name) for name in ("LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell")
}


def nnx_perturbed(name, seed):
    """An NNX cell holding N(0, 0.5²) params (built abstractly: NNX's random
    init costs seconds of compile on CPU)."""
    cell = nnx.eval_shape(lambda: NNX_TYPES[name](D, H, rngs=nnx.Rngs(0)))
    state = nnx.state(cell, nnx.Param)
    nnx.replace_by_pure_dict(state, perturb(nnx.to_pure_dict(state), seed))
    nnx.update(cell, state)
    return cell


def nnx_outputs(cell, x):
    graphdef, state = nnx.split(cell)

    @jax.jit
    def run(state, x):
        cell = nnx.merge(graphdef, state)
        carry = jax.tree_util.tree_map(
            jnp.zeros_like, cell.initialize_carry((B, D), rngs=nnx.Rngs(0))
        )
        outs = []
        for t in range(T):
            carry, y = cell(carry, x[:, t])
            outs.append(y)
        return jnp.stack(outs, 1)

    return run(state, x)


@pytest.mark.parametrize("name", list(NNX_TYPES))
def test_nnx_cells(name):
    cell = nnx_perturbed(name, seed=len(name))
    layer, params = interop.from_flax_nnx(cell)
    x = inputs(2)
    np.testing.assert_allclose(
        rj_outputs(layer, params, x), nnx_outputs(cell, x), rtol=0, atol=ATOL
    )
    target = nnx_perturbed(name, seed=0)
    assert interop.to_flax_nnx(params, target, layer=layer) is target
    jax.tree_util.tree_map(
        np.testing.assert_array_equal,
        nnx.to_pure_dict(nnx.state(target, nnx.Param)),
        nnx.to_pure_dict(nnx.state(cell, nnx.Param)),
    )


def test_nnx_gru_has_no_b_hn():
    cell = rj.cells.gru(H)
    params = perturb(jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), D)), 3)
    with pytest.raises(ValueError, match="no slot for b_hh of the candidate n.*flax issue 5594"):
        interop.to_flax_nnx(params, nnx_perturbed("GRUCell", 0))
    params["b_hh"] = params["b_hh"].at[2 * H :].set(0.0)  # representable now
    target = interop.to_flax_nnx(params, nnx_perturbed("GRUCell", 0))
    x = inputs(3)
    np.testing.assert_allclose(
        rj_outputs(rj.nn.RNN(cell), params, x), nnx_outputs(target, x), rtol=0, atol=ATOL
    )
