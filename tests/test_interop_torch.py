"""PyTorch interop: outputs, final states and gradients of nn.LSTM / GRU /
RNN (and cells) match rj within 1e-5 (fp32) on padded batches; round trips
are exact.

The module grid is a covering subset (every pair of options meets); the rest
of the full product (64 configs in all) is marked slow: ``pytest -m slow``."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from recurrent_jax import interop  # noqa: E402

ATOL = 1e-5
D, H, T = 3, 4, 5
LENGTHS = [5, 2, 4]  # unsorted, mixed, one full length (no 0: pack_padded_sequence rejects it)


def randomize(module, seed, scale=0.5):
    """Weights and biases drawn N(0, scale²): nonzero biases, not the default init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen))
    return module


def make(kind, num_layers=1, bidirectional=False, proj=None, bias=True, batch_first=True, seed=0):
    options = dict(
        num_layers=num_layers, bidirectional=bidirectional, bias=bias, batch_first=batch_first
    )
    if kind == "lstm":
        module = torch.nn.LSTM(D, H, proj_size=proj or 0, **options)
    elif kind == "gru":
        module = torch.nn.GRU(D, H, **options)
    else:
        module = torch.nn.RNN(D, H, nonlinearity=kind, **options)
    # relu stacks grow: a smaller scale keeps values O(1), so 1e-5 is ~100 ulps
    return randomize(module, seed, scale=0.3 if kind == "relu" else 0.5)


def torch_run(module, x, lengths, h0, c0, r_out, r_h, r_c):
    """Packed forward; loss = <out, r_out> + <h_n, r_h> (+ <c_n, r_c>)."""
    x = x.clone().requires_grad_(True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False
    )
    if isinstance(module, torch.nn.LSTM):
        out, (h_n, c_n) = module(packed, (h0, c0))
    else:
        (out, h_n), c_n = module(packed, h0), None
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(
        out, batch_first=module.batch_first, total_length=T
    )
    loss = (out * r_out).sum() + (h_n * r_h).sum()
    if c_n is not None:
        loss = loss + (c_n * r_c).sum()
    module.zero_grad()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return out, h_n, c_n, x.grad, grads


def rj_run(layer, params, x, lengths, h0, c0, r_out, r_h, r_c):
    layer = layer.clone(return_carry=True)
    initial = interop.from_torch_state(layer, h0, c0)

    def loss_fn(params, x):
        carries, ys = layer.apply({"params": params}, x, seq_lengths=lengths, initial_carry=initial)
        state = interop.to_torch_state(carries)
        h_n, c_n = state if isinstance(state, tuple) else (state, None)
        loss = (ys * r_out).sum() + (h_n * r_h).sum()
        if c_n is not None:
            loss = loss + (c_n * r_c).sum()
        return loss, (ys, h_n, c_n)

    grad_fn = compile_quickly(jax.grad(loss_fn, argnums=(0, 1), has_aux=True), params, x)
    (g_params, g_x), (ys, h_n, c_n) = grad_fn(params, x)
    return ys, h_n, c_n, g_x, g_params


def compile_quickly(fn, *args):
    """``jax.jit(fn)`` compiled at XLA's backend optimisation level 0: 30%
    less compile time on CPU for these tiny programs, same numbers to 1e-7."""
    lowered = jax.jit(fn).lower(*args)
    try:
        return lowered.compile({"xla_backend_optimization_level": 0})
    except Exception:  # an XLA without that option
        return lowered.compile()


def close(a, b):
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    np.testing.assert_allclose(np.asarray(b), a, rtol=0, atol=ATOL)


def full_grid():
    """Every combination: 16 LSTM, 16 GRU, 32 RNN configs."""
    b = (False, True)
    configs = [("lstm",) + c for c in itertools.product((1, 2), b, (None, 2), b, b)]
    configs += [
        ("gru", L, bi, None, bias, bf) for L, bi, bias, bf in itertools.product((1, 2), b, b, b)
    ]
    configs += [
        (a, L, bi, None, bias, bf)
        for a, L, bi, bias, bf in itertools.product(("tanh", "relu"), (1, 2), b, b, b)
    ]
    return configs


def covering_grid():
    """A subset in which every pair of options meets at least once: the LSTM
    rows are the 2^(5-2) design with bias = L^bi^proj and batch_first = L^bi
    (each pair of columns takes all four value pairs twice)."""
    configs = []
    for L, bi, proj in itertools.product((0, 1), repeat=3):
        configs.append(
            ("lstm", 1 + L, bool(bi), 2 if proj else None, not (L ^ bi ^ proj), not (L ^ bi))
        )
    for L, bi, bias, bf in (
        (0, 0, 0, 0),
        (0, 1, 1, 1),
        (1, 0, 1, 0),
        (1, 1, 0, 1),
        (0, 0, 1, 1),
        (1, 1, 1, 0),
    ):
        configs.append(("gru", 1 + L, bool(bi), None, bool(bias), bool(bf)))
    for act, L, bi, bias, bf in (
        ("tanh", 0, 0, 1, 1),
        ("tanh", 1, 1, 0, 0),
        ("relu", 0, 1, 0, 1),
        ("relu", 1, 0, 1, 0),
    ):
        configs.append((act, 1 + L, bool(bi), None, bool(bias), bool(bf)))
    return configs


def grid():
    """The covering subset; the rest of the full product is marked slow."""
    fast = covering_grid()
    slow = [
        pytest.param(c, marks=pytest.mark.slow, id=_id(c)) for c in full_grid() if c not in fast
    ]
    return [pytest.param(c, id=_id(c)) for c in fast] + slow


def _id(c):
    kind, layers, bidi, proj, bias, batch_first = c
    direction = "bi" if bidi else "uni"
    layout = "bf" if batch_first else "tm"
    return f"{kind}-L{layers}-{direction}-P{proj}-{'bias' if bias else 'nobias'}-{layout}"


@pytest.mark.parametrize("config", grid())
def test_module_matches_torch(config):
    kind, layers, bidi, proj, bias, batch_first = config
    module = make(kind, layers, bidi, proj, bias, batch_first, seed=len(_id(config)))
    layer, params = interop.from_torch(module)
    gen = torch.Generator().manual_seed(1)
    B, dirs, out_h = len(LENGTHS), 2 if bidi else 1, proj or H
    x = torch.randn((B, T, D) if batch_first else (T, B, D), generator=gen)
    h0 = torch.randn(layers * dirs, B, out_h, generator=gen)
    c0 = torch.randn(layers * dirs, B, H, generator=gen) if kind == "lstm" else None
    r_out = torch.randn(
        (B, T, dirs * out_h) if batch_first else (T, B, dirs * out_h), generator=gen
    )
    r_h, r_c = (
        torch.randn(h0.shape, generator=gen),
        torch.randn((layers * dirs, B, H), generator=gen),
    )
    t_out, t_h, t_c, t_gx, t_grads = torch_run(module, x, LENGTHS, h0, c0, r_out, r_h, r_c)
    as_jax = lambda t: None if t is None else jnp.asarray(t.numpy())  # noqa: E731
    ys, h_n, c_n, g_x, g_params = rj_run(
        layer,
        params,
        as_jax(x),
        jnp.asarray(LENGTHS),
        as_jax(h0),
        as_jax(c0),
        as_jax(r_out),
        as_jax(r_h),
        as_jax(r_c),
    )
    close(t_out, ys)
    close(t_h, h_n)
    if kind == "lstm":
        close(t_c, c_n)
    close(t_gx, g_x)
    _, expected = interop.from_torch(t_grads, batch_first=batch_first)
    jax.tree_util.tree_map(close, expected, g_params)


@pytest.mark.parametrize("config", full_grid()[::3], ids=_id)
def test_round_trip_is_exact(config):
    kind, layers, bidi, proj, bias, batch_first = config
    source = make(kind, layers, bidi, proj, bias, batch_first, seed=3)
    target = make(kind, layers, bidi, proj, bias, batch_first, seed=4)
    layer, params = interop.from_torch(source)
    assert interop.to_torch(params, target, layer=layer) is target
    for (name, a), (_, b) in zip(source.named_parameters(), target.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    # the state_dict path reads the same config from keys and shapes
    nonlinearity = kind if kind in ("tanh", "relu") else None
    layer2, params2 = interop.from_torch(
        source.state_dict(), batch_first=batch_first, nonlinearity=nonlinearity
    )
    assert layer2 == layer
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, params2)
    prefixed = {f"encoder.rnn.{k}": v for k, v in source.state_dict().items()}
    _, params3 = interop.from_torch(
        prefixed, batch_first=batch_first, nonlinearity=nonlinearity, prefix="encoder.rnn."
    )
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, params3)


def test_eval_mode_is_deterministic():
    module = make("lstm", num_layers=2).eval()
    module.dropout = 0.5
    layer, _ = interop.from_torch(module)
    assert layer.dropout == 0.5 and layer.deterministic is True
    assert interop.from_torch(module.train())[0].deterministic is None


@pytest.mark.parametrize("kind", ["lstm", "gru", "tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_cells_match_torch(kind, bias):
    cell_type = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}.get(kind)
    if cell_type is None:
        cell = randomize(torch.nn.RNNCell(D, H, bias=bias, nonlinearity=kind), 5)
    else:
        cell = randomize(cell_type(D, H, bias=bias), 5)
    layer, params = interop.from_torch(cell)
    assert set(params) == ({"w_ih", "w_hh", "b_ih", "b_hh"} if bias else {"w_ih", "w_hh"})
    x = torch.randn(2, T, D, generator=torch.Generator().manual_seed(6))
    state = None
    outs = []
    for t in range(T):
        state = cell(x[:, t], state)
        outs.append(state[0] if kind == "lstm" else state)
    ys = layer.apply({"params": params}, jnp.asarray(x.numpy()))
    close(torch.stack(outs, 1), ys)
    target = (
        cell_type(D, H, bias=bias)
        if cell_type
        else torch.nn.RNNCell(D, H, bias=bias, nonlinearity=kind)
    )
    interop.to_torch(params, target, layer=layer)
    assert all(
        torch.equal(a, b) for a, b in zip(cell.parameters(), target.parameters(), strict=True)
    )


def test_state_helpers_order_is_layer_major():
    module = make("lstm", num_layers=2, bidirectional=True)
    layer, _ = interop.from_torch(module)
    h0 = torch.arange(4 * 3 * H, dtype=torch.float32).reshape(4, 3, H)
    carries = interop.from_torch_state(module, h0, h0 + 1)
    assert len(carries) == 2 and len(carries[0]) == 2
    np.testing.assert_array_equal(carries[1][0].h, h0[2].numpy())  # l1 fwd
    h_n, c_n = interop.to_torch_state(carries)
    np.testing.assert_array_equal(h_n, h0.numpy())
    np.testing.assert_array_equal(c_n, h0.numpy() + 1)
    with pytest.raises(ValueError, match="num_layers\\*num_directions = 4"):
        interop.from_torch_state(layer, h0[:2])


def test_unrepresentable_params_raise():
    _, params = interop.from_torch(make("lstm", bias=True))
    with pytest.raises(ValueError, match="no bias at all.*bias=True"):
        interop.to_torch(params, make("lstm", bias=False))
    _, proj_params = interop.from_torch(make("lstm", proj=2))
    with pytest.raises(ValueError, match="no projection"):
        interop.to_torch(proj_params, make("lstm"))
    _, gru_params = interop.from_torch(make("gru"))
    with pytest.raises(ValueError, match="reset_after=False.*cannot reproduce"):
        interop.to_torch(gru_params, make("gru"), reset_after=False)
    with pytest.raises(ValueError, match="num_layers=2"):
        interop.to_torch(gru_params, make("gru", num_layers=2))
    with pytest.raises(TypeError, match="expected torch.nn.LSTM, GRU, RNN.*got Linear"):
        interop.from_torch(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="weight_ih_l0"):
        interop.from_torch({"weight": torch.zeros(2)})
