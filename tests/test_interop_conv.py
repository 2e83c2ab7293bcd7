"""ConvLSTM weights from Keras 3 (JAX backend) and Flax linen: the ported
cell reproduces the peer's outputs and final states."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import recurrent_jax as rj  # noqa: E402
from recurrent_jax import interop  # noqa: E402

B, T, C, F = 2, 4, 3, 4


@pytest.fixture(autouse=True)
def peers_rank_promotion():
    """Keras and Flax broadcast implicitly, which the suite's strict
    jax_numpy_rank_promotion="raise" rejects."""
    with jax.numpy_rank_promotion("allow"):
        yield


@pytest.mark.parametrize("spatial, kernel", [(1, (3,)), (2, (3, 5)), (3, (3, 1, 3))])
def test_keras_conv_lstm(spatial, kernel):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    layer_cls = getattr(keras.layers, f"ConvLSTM{spatial}D")
    layer = layer_cls(
        F, kernel, padding="same", return_sequences=True, return_state=True,
        bias_initializer="random_normal",
    )  # fmt: skip
    shape = (B, T, *(5, 4, 3)[:spatial], C)
    xs = np.random.default_rng(spatial).normal(size=shape).astype(np.float32)
    want, h, c = layer(xs)
    cell, params = interop.from_keras_conv_lstm(layer)
    carry, ys = rj.unroll(cell, params, jnp.asarray(xs))
    np.testing.assert_allclose(ys, want, atol=1e-5)
    np.testing.assert_allclose(carry.h, h, atol=1e-5)
    np.testing.assert_allclose(carry.c, c, atol=1e-5)


def test_keras_options_that_cannot_port_are_errors():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    layer = keras.layers.ConvLSTM2D(F, (3, 3))  # Keras's default padding is "valid"
    layer.build((None, T, 5, 5, C))
    with pytest.raises(ValueError, match=r"keras_layer: ConvLSTM2D's padding must be 'same'"):
        interop.from_keras_conv_lstm(layer)
    with pytest.raises(ValueError, match="expected a ConvLSTM1D/2D/3D, got LSTM"):
        interop.from_keras_conv_lstm(keras.layers.LSTM(3))


def test_flax_conv_lstm_cell():
    nn = pytest.importorskip("flax.linen")
    module = nn.ConvLSTMCell(F, (3, 3))
    xs = jax.random.normal(jax.random.key(0), (B, T, 5, 4, C))
    carry = module.initialize_carry(jax.random.key(1), xs[:, 0].shape)
    variables = module.init(jax.random.key(2), carry, xs[:, 0])
    noise = lambda path, a: a + 0.2 * jax.random.normal(jax.random.key(len(str(path))), a.shape)  # noqa: E731
    variables = jax.tree_util.tree_map_with_path(noise, variables)
    outputs = []
    for t in range(T):  # the oracle: Flax's cell stepped by hand
        carry, y = module.apply(variables, carry, xs[:, t])
        outputs.append(y)
    cell, params = interop.from_flax_conv_lstm(variables, module)
    final, ys = rj.unroll(cell, params, xs)
    np.testing.assert_allclose(ys, jnp.stack(outputs, 1), atol=1e-5)
    np.testing.assert_allclose(final.c, carry[0], atol=1e-5)  # Flax's carry is (c, h)
    np.testing.assert_allclose(final.h, carry[1], atol=1e-5)
    with pytest.raises(ValueError, match="expected padding 'SAME' and strides 1"):
        interop.from_flax_conv_lstm(variables, nn.ConvLSTMCell(F, (3, 3), padding="VALID"))
