"""The engine's options value and its table of backends: validation, the
one dispatch site, and every backend reachable through ``rj.Engine`` with the
same result as the plain scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close, auto_backend_for_plain_cells, make, normal

import recurrent_jax as rj

B, T, D = 2, 6, 3
LENGTHS = np.array([6, 3])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("impl", "pallas2", r"impl: expected one of \['auto', 'cudnn'"),
        ("unroll", 0, "unroll: expected a positive int or 'auto', got 0"),
        ("unroll", True, "unroll: expected a positive int or 'auto', got True"),
        ("hoist", 1, "hoist: expected a bool, got 1"),
        ("remat", -4, "remat: expected None or a positive int, got -4"),
        ("chunk_length", 2.5, "chunk_length: expected None or a positive int, got 2.5"),
        ("deer_max_iters", 0, "deer_max_iters: expected None or a positive int, got 0"),
        ("deer_tol", 0.0, "deer_tol: expected a positive float, got 0.0"),
        ("deer_quasi", "yes", "deer_quasi: expected a bool, got 'yes'"),
    ],
)
def test_bad_engine_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        rj.Engine(**{field: value})
    with pytest.raises(ValueError, match=message):
        rj.Engine().replace(**{field: value})


def test_unknown_engine_option_is_an_error(rng):
    cell, params = make("gru", rng)
    with pytest.raises(TypeError, match=r"engine options: unknown option\(s\) \['remats'\]"):
        rj.unroll(cell, params, normal(rng, (B, T, D)), remats=4)
    with pytest.raises(TypeError, match=r"engine options: unknown option\(s\) \['imp'\]"):
        rj.layer(cell, imp="scan")
    with pytest.raises(ValueError, match="engine: expected an rj.Engine or None, got 'scan'"):
        rj.unroll(cell, params, normal(rng, (B, T, D)), engine="scan")


def test_engine_is_hashable_and_keywords_override_it():
    engine = rj.Engine(impl="scan", remat=4)
    assert hash(engine) == hash(rj.Engine(impl="scan", remat=4))
    assert rj.engine.resolve(engine, remat=8) == rj.Engine(impl="scan", remat=8)
    assert rj.engine.resolve(None) == rj.Engine()


def test_explicit_backend_lists_every_reason(rng):
    cell, params = make("mgu", rng)  # no pointwise split: not fused
    xs = normal(rng, (B, T, D))
    with pytest.raises(ValueError) as info:
        rj.unroll(cell, params, xs, impl="fused", return_carries=True, hoist=False)
    message = str(info.value)
    assert message.startswith("impl: 'fused' cannot be used here: ")
    for reason in ("no `pointwise` split", "`return_carries` is set", "`hoist=False`"):
        assert reason in message
    with pytest.raises(
        ValueError, match="impl: 'associative' cannot be used here: it needs a cell"
    ):
        rj.unroll(cell, params, xs, impl="associative")


def test_auto_takes_the_first_backend_without_reasons(rng):
    def chosen(cell, **uses):
        xs = jax.ShapeDtypeStruct((T, B, D), jnp.float32)
        cell = rj.cells.with_defaults(cell)
        call = rj.backends.Call(cell, {}, xs, rj.Engine(), frozenset(k for k in uses if uses[k]))
        return rj.backends.choose(call).name

    assert chosen(rj.cells.lstm(4)) == auto_backend_for_plain_cells()
    assert chosen(rj.cells.lstm(4, peephole=True)) == "fused"
    native = auto_backend_for_plain_cells() == "cpu"  # the C++ backend runs resets too
    assert chosen(rj.cells.lstm(4), resets=True) == ("cpu" if native else "scan")
    assert chosen(rj.cells.lstm(4, peephole=True), resets=True) == "scan"
    assert chosen(rj.cells.lstm(4), no_hoist=True) == "scan"
    assert chosen(rj.cells.mgu(4)) == "scan"
    assert chosen(rj.cells.s4d(4, state_size=4)) == "fft"  # time-invariant: a convolution
    assert chosen(rj.cells.s4d(4, state_size=4), mask=True) == "scan"
    assert chosen(rj.cells.s6(4, state_size=4)) == "selective"  # Mamba's scan, its own VJP
    assert chosen(rj.cells.s6(4, state_size=4), resets=True) == "scan"
    # every backend appears in the table with a reason auto skips it or a run
    assert set(rj.backends.NAMES) == {
        "cudnn", "pallas_tpu", "fft", "associative", "selective", "chunked", "deer", "pallas",
        "cpu", "fused", "scan",
    }  # fmt: skip


@pytest.mark.parametrize("impl", ["scan", "fused"])
def test_named_scope_says_which_backend_ran(impl, rng):
    cell, params = make("lstm", rng)
    xs = normal(rng, (B, T, D))
    text = (
        jax.jit(lambda p, x: rj.unroll(cell, p, x, impl=impl)[1])
        .lower(params, xs)
        .as_text(debug_info=True)
    )
    assert f"recurrent_jax.{impl}" in text
    other = {"scan": "fused", "fused": "scan"}[impl]
    assert f"recurrent_jax.{other}" not in text


def test_engine_value_equals_keywords_through_layers(rng):
    """Each way of giving the engine (value, keywords, both) computes the same;
    the layers pass it to every cell they wrap."""
    xs, lens = normal(rng, (B, T, D)), jnp.asarray(LENGTHS)
    engine = rj.Engine(impl="scan", remat=2, unroll=3)
    cell = rj.cells.gru(4)
    net_value = rj.stack([rj.bidirectional(cell, engine=engine), cell], engine=engine)
    net_keywords = rj.stack([rj.bidirectional(cell, impl="scan", remat=2, unroll=3), cell])
    net_default = rj.stack([rj.bidirectional(cell), cell])
    params = net_default.init(jax.random.PRNGKey(0), D)
    run = jax.jit(lambda p: [n.apply(p, xs, seq_lengths=lens) for n in (net_value, net_keywords)])
    want = jax.jit(lambda p: net_default.apply(p, xs, seq_lengths=lens))(params)
    for got in run(params):
        assert_trees_close(got, want, atol=1e-5, rtol=1e-5)
    text = jax.jit(lambda p: net_value.apply(p, xs)[1]).lower(params).as_text(debug_info=True)
    assert "recurrent_jax.scan" in text and "recurrent_jax.fused" not in text


def test_engine_of_layers_cannot_be_set_twice():
    lyr = rj.layer(rj.cells.gru(4))
    with pytest.raises(ValueError, match="engine: applies to the Cells given to stack"):
        rj.stack([lyr, lyr], impl="scan")
    with pytest.raises(ValueError, match=r"layer_options: \['impl'\] apply to Cells only"):
        rj.bidirectional(lyr, impl="scan")
    with pytest.raises(ValueError, match=r"layer_options: \['time_major'\] apply to Cells only"):
        rj.bidirectional(lyr, time_major=True)
