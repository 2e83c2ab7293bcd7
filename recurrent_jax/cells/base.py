"""The Cell protocol shared by every recurrent cell.

A cell is a value, not a class hierarchy: a ``Cell`` NamedTuple of pure
functions (the optax ``GradientTransformation`` pattern).

Shapes use these letters throughout: ``B...`` any number of batch dims,
``T`` time steps, ``D`` input features, ``H`` hidden units, ``G`` gates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, initializers
from recurrent_jax._checks import (
    check_choice,
    check_positive_int,
)

Array = jax.Array
Params = Any
Carry = Any

CARRY_DTYPE = jnp.float32  # the narrowest carry dtype: bf16 compute keeps fp32 carries


def carry_dtype(*dtypes) -> jnp.dtype:
    """The dtype of carries, gate sums and reductions for the given compute
    or param dtypes (None entries ignored): the widest of float32 and the
    floating ones, so bf16 and fp32 compute keep fp32 carries and float64
    compute (``jax_enable_x64`` on) gets float64 carries. With x64 off the
    result is what JAX makes of it (float32)."""
    widest = jnp.dtype(CARRY_DTYPE)
    for dtype in dtypes:
        if dtype is None:
            continue
        dtype = jnp.dtype(dtype)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            dtype = jnp.finfo(dtype).dtype
        if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize > widest.itemsize:
            widest = dtype
    return jnp.dtype(jax.dtypes.canonicalize_dtype(widest))


def carry_dtype_of(cell: Cell, params) -> jnp.dtype:
    """The dtype the engine asks ``cell.initial_carry`` for when ``cell``
    runs with ``params``: ``carry_dtype`` of the compute dtype, which is
    ``cell.compute_dtype`` or, where that is None, the params' (their
    widest floating dtype). A cell's ``initial_carry`` has the last word:
    the engine runs whatever dtype its leaves have."""
    if cell.compute_dtype is not None:
        return carry_dtype(cell.compute_dtype)
    return carry_dtype(*(getattr(p, "dtype", None) for p in jax.tree_util.tree_leaves(params)))


def widen(x: Array, *dtypes) -> Array:
    """``x`` in ``carry_dtype(x.dtype, *dtypes)``: fp32 at least, float64
    where ``x`` or a given compute dtype is."""
    return x.astype(carry_dtype(x.dtype, *dtypes))


class LSTMCarry(NamedTuple):
    """LSTM state: hidden ``h`` (B..., H or P) and cell ``c`` (B..., H)."""

    h: Array
    c: Array


class Cell(NamedTuple):
    """A recurrent cell as pure functions.

    Attributes:
      init: ``init(key, input_size) -> params``, a dict pytree.
      step: ``step(params, carry, xp_t) -> (carry, y_t)``; the recurrent half,
        ``xp_t`` (B..., G*H) is one time step of ``project``'s output.
      initial_carry: ``initial_carry(batch_shape, dtype) -> carry``; the
        engine passes ``carry_dtype_of(cell, params)``, and runs the dtype
        of the leaves returned. The built-in cells' default ``dtype`` is
        their ``CellOptions.carry_dtype``.
      project: ``project(params, xs) -> xp`` maps (B..., T, D) to
        (B..., T, G*H) for all steps in one GEMM; identity when absent.
      read: ``read(carry) -> h_in``, the part of the carry that the recurrent
        kernel reads (recurrent dropout masks it).
      update: ``update(params, carry, xp_t, h_in) -> (carry, y_t)`` with
        ``step(p, c, x) == update(p, c, x, read(c))``.
      pointwise: ``pointwise(params, carry, xp_t, hh_t) -> (carry, y_t)`` where
        ``hh_t = h_in @ params["w_hh"]``: present when the only recurrent GEMM
        is that single one, which enables the fused custom-VJP backward.
      hidden_size: H, the size of ``y_t``.
      name: a short family name, for messages.
      compute_dtype: dtype of the recurrent GEMM (None: the params' dtype).
      linear: present when the cell is linear in its carry:
        ``linear(params, xp) -> (a, b)`` with ``carry' = a ⊙ carry + b`` at
        every step, ``xp`` (..., G) any leading axes (the engine passes all T
        steps at once). ``a``, ``b`` are real (..., H) for a real carry
        (..., H), or complex (..., N) for a carry (..., 2N) holding
        ``[Re h, Im h]``; a ``parallel.LogCoefficients(log_a, log_b)`` result
        declares positive ``a``, ``b`` scanned in log space, and a
        ``parallel.BlockCoefficients(a, b)`` one 2×2 blocks, a (..., N, 2, 2)
        and b (..., N, 2), on a carry (..., 2N) of planes
        ``[h[:, 0], h[:, 1]]`` (oscillators). ``step`` must
        compute the same recurrence; it also gives ``y_t``. Enables
        ``impl="associative"`` and ``"chunked"`` (``recurrent_jax.parallel``).
      cudnn_kernel: the plain recurrence that hand-written kernels compute
        exactly for this cell, or None: "lstm" for a plain fp32 LSTM
        (default activations, no projection, peepholes or layer norm; cuDNN's
        ``impl="cudnn"`` and the CPU backend), "gru" for a plain fp32 GRU
        with the reset after (the CPU backend).
      spatial_dims: S, the axes between time and features in the inputs,
        (B..., T, *spatial, D), of a convolutional cell (0: none). Its carry
        leaves are (B..., *spatial, ·): ``initial_carry`` is called with
        (*batch, *spatial) as the batch shape. Only the "scan" backend runs
        such cells.
      time_invariant: present when each of the cell's H channels is a
        single-input single-output diagonal system whose coefficients do
        not change over time (S4D): ``time_invariant(params) ->
        convolution.DiagonalSystem`` (Ā, B̄, C complex (H, M), D (H,)) with
        ``x_t = Ā ⊙ x_{t−1} + B̄ u_t`` and ``y_t = 2 Re Σ_m C_m x_{t,m} +
        D u_t``, u the output of ``project``, and a carry (..., 2·H·M)
        holding ``[Re x, Im x]``, each the (H, M) modes flattened
        channel-major. ``step`` must compute the same. Enables
        ``impl="fft"`` (``recurrent_jax.convolution``).
      selective: present when the cell is a selective state-space model
        (Mamba's S6): ``selective(params, xp) -> (terms, readout)`` with
        ``terms`` a ``selective.SelectiveTerms`` (A (H, N); u, Δ (T, B..., H);
        B_t, C_t (T, B..., N)) from the time-major output of ``project``,
        the carry (..., H·N) being h[d, n] channel-major, and
        ``readout(xp, y) -> y`` the step's output from the scan's
        y_t = Σ_n C_t h_t (the skip and gate). ``step`` must compute the
        same. Enables ``impl="selective"`` (``recurrent_jax.selective``).
    """

    init: Callable[..., Params]
    step: Callable[..., tuple[Carry, Array]]
    initial_carry: Callable[..., Carry] | None = None
    project: Callable[[Params, Array], Array] | None = None
    read: Callable[[Carry], Array] | None = None
    update: Callable[..., tuple[Carry, Array]] | None = None
    pointwise: Callable[..., tuple[Carry, Array]] | None = None
    hidden_size: int | None = None
    name: str = "cell"
    compute_dtype: Any = None
    linear: Callable[..., Any] | None = None
    cudnn_kernel: str | None = None
    spatial_dims: int = 0
    time_invariant: Callable[[Params], Any] | None = None
    selective: Callable[..., Any] | None = None


def with_defaults(cell: Cell) -> Cell:
    """Fills the optional fields of a user-defined cell.

    ``project`` defaults to the identity; ``initial_carry`` to zeros of shape
    (B..., hidden_size); ``read`` to the carry itself (or ``carry.h``);
    ``update`` to calling ``step`` on the carry with ``h_in`` put back in.
    """
    project = cell.project or (lambda params, xs: xs)
    initial_carry = cell.initial_carry
    if initial_carry is None:
        if cell.hidden_size is None:
            initial_carry = _missing_initial_carry
        else:
            initial_carry = zeros_carry(cell.hidden_size)
    read = cell.read or default_read
    update = cell.update or _update_from_step(cell.step)
    return cell._replace(project=project, initial_carry=initial_carry, read=read, update=update)


def _missing_initial_carry(batch_shape, dtype=None):
    raise ValueError(
        "cell: a cell without `initial_carry` needs `hidden_size` to build a "
        "zero carry; give one of them, or pass `initial_carry=` to unroll"
    )


def zeros_carry(hidden_size: int, default_dtype=CARRY_DTYPE) -> Callable[..., Array]:
    def initial_carry(batch_shape, dtype=None):
        batch_shape = _checks.check_batch_shape("batch_shape", batch_shape)
        return jnp.zeros((*batch_shape, hidden_size), default_dtype if dtype is None else dtype)

    return initial_carry


def default_read(carry: Carry) -> Array:
    return carry.h if hasattr(carry, "h") else carry


def _replace_read(carry: Carry, h_in: Array) -> Carry:
    return carry._replace(h=h_in) if hasattr(carry, "h") else h_in


def _update_from_step(step):
    def update(params, carry, xp_t, h_in):
        return step(params, _replace_read(carry, h_in), xp_t)

    return update


# --- helpers shared by the built-in cells -------------------------------


def compute(x: Array, dtype) -> Array:
    """Casts a matmul operand to the compute dtype (None keeps it)."""
    return x if dtype is None else x.astype(dtype)


def draw(init, key, shape, dtype):
    """``init`` drawn in fp32, then cast: initialisers such as the orthogonal
    one need a QR that has no bf16 kernel on CPU."""
    return init(key, shape, jnp.float32).astype(dtype)


def matmul(x: Array, w: Array, dtype) -> Array:
    """``x @ w`` in the compute dtype (None: ``w``'s), accumulated and
    returned in its ``carry_dtype`` (fp32 for bf16 or fp32, else float64)."""
    dtype = w.dtype if dtype is None else dtype
    return jnp.matmul(
        compute(x, dtype), compute(w, dtype), preferred_element_type=carry_dtype(dtype)
    )


def check_init_args(key, input_size) -> int:
    """Every built-in ``init(key, input_size)`` starts here."""
    _checks.check_key("key", key)
    return check_positive_int("input_size", input_size)


BIAS_MODES = ("double", "single", "none")


def init_weights(key, input_size, recurrent_size, hidden_size, num_gates, opts, num_heads=None):
    """``w_ih`` (D, G*H) and ``w_hh`` (K, G*H), K the recurrent input size,
    or with ``num_heads`` the block-diagonal (n, H/n, G*H/n) of ``init_heads``.

    ``w_ih`` draws from ``kernel_init`` over the whole matrix (Keras);
    ``w_hh`` from ``recurrent_init`` one (K, H) gate block at a time, so each
    block is orthogonal under the default initialiser.
    """
    k_ih, k_hh = jax.random.split(key)
    dt = opts.param_dtype
    w_ih = draw(opts.kernel_init, k_ih, (input_size, num_gates * hidden_size), dt)
    if num_heads is not None:
        return {"w_ih": w_ih, "w_hh": init_heads(k_hh, hidden_size, num_gates, num_heads, opts)}
    blocks = [
        draw(opts.recurrent_init, k, (recurrent_size, hidden_size), dt)
        for k in jax.random.split(k_hh, num_gates)
    ]
    return {"w_ih": w_ih, "w_hh": jnp.concatenate(blocks, axis=-1)}


def check_heads(num_heads, hidden_size: int) -> int | None:
    """``num_heads`` (None: a dense W_hh) must divide ``hidden_size``."""
    if num_heads is None:
        return None
    check_positive_int("num_heads", num_heads)
    if hidden_size % num_heads:
        raise ValueError(
            f"num_heads: expected a divisor of hidden_size={hidden_size}, got {num_heads}"
        )
    return num_heads


def init_heads(key, hidden_size, num_gates, num_heads, opts):
    """A block-diagonal ``w_hh``: ``num_heads`` blocks stored (n, H/n, G*H/n),
    each (H/n, H/n) gate block drawn from ``recurrent_init``."""
    size = hidden_size // num_heads
    keys = jax.random.split(key, num_heads * num_gates)
    blocks = [draw(opts.recurrent_init, k, (size, size), opts.param_dtype) for k in keys]
    heads = [
        jnp.concatenate(blocks[n * num_gates : (n + 1) * num_gates], axis=-1)
        for n in range(num_heads)
    ]
    return jnp.stack(heads)


def recurrent_product(h_in: Array, w_hh: Array, dtype) -> Array:
    """``h_in @ W_hh`` in the gate-major layout (…, G*H) of the dense cells:
    for heads, W_hh (n, H/n, G*H/n) acts on each head's H/n units alone and
    head n's units of gate g land at columns g*H + n*H/n + [0, H/n)."""
    if w_hh.ndim == 2:
        return matmul(h_in, w_hh, dtype)
    if w_hh.shape[0] == 1:  # one head is the dense cell, to the bit
        return matmul(h_in, w_hh[0], dtype)
    num_heads, size, width = w_hh.shape
    num_gates, batch = width // size, h_in.shape[:-1]
    dtype = w_hh.dtype if dtype is None else dtype
    heads = compute(h_in, dtype).reshape(*batch, num_heads, size)
    hh = jnp.einsum(
        "...nk,nkm->...nm", heads, compute(w_hh, dtype), preferred_element_type=carry_dtype(dtype)
    )
    hh = jnp.swapaxes(hh.reshape(*batch, num_heads, num_gates, size), -3, -2)
    return hh.reshape(*batch, num_gates * num_heads * size)


def init_biases(key, size, opts, *, offsets=None):
    """Bias params for ``opts.bias``: ``b_ih`` and ``b_hh`` ("double", as
    PyTorch), ``b`` ("single", as Keras) or none. ``offsets`` (size,) is added
    to the input-side bias (the LSTM forget-gate bias)."""
    k_ih, k_hh = jax.random.split(key)
    dt = opts.param_dtype
    if opts.bias == "none":
        return {}
    first = draw(opts.bias_init, k_ih, (size,), dt)
    if offsets is not None:
        first = first + offsets.astype(dt)
    if opts.bias == "single":
        return {"b": first}
    return {"b_ih": first, "b_hh": draw(opts.bias_init, k_hh, (size,), dt)}


def lift(v, like):
    """``v`` in the dtype of ``like``, with leading 1-axes up to its rank:
    explicit broadcasting and casting, so the code runs under
    ``jax_numpy_rank_promotion="raise"`` and strict dtype promotion."""
    if not hasattr(v, "ndim") or v.ndim == 0:
        return v
    return v.astype(like.dtype).reshape((1,) * (like.ndim - v.ndim) + v.shape)


def add_bias(x, params):
    """``x`` plus the sum of whichever of ``b``, ``b_ih``, ``b_hh`` exist."""
    return x + lift(total_bias(params), x)


def total_bias(params):
    """Sum of whichever of ``b``, ``b_ih``, ``b_hh`` are present (or 0.)."""
    return sum(params[k] for k in ("b", "b_ih", "b_hh") if k in params)


def layer_norm(x, scale, bias=None, *, groups=1, eps=1e-5):
    """Normalises each of ``groups`` equal slices of the last axis."""
    shape = x.shape
    x = x.reshape(*shape[:-1], groups, shape[-1] // groups)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    x = ((x - mean) * jax.lax.rsqrt(var + eps)).reshape(shape)
    x = x * lift(scale, x)
    return x if bias is None else x + lift(bias, x)


class CellOptions(NamedTuple):
    """Options every built-in cell takes.

    bias: "double" (``b_ih`` and ``b_hh``, PyTorch's parameter count),
      "single" (``b``, Keras's) or "none".
    kernel_init: initialiser of ``w_ih``; default Glorot uniform (Keras).
    recurrent_init: initialiser of each (K, H) block of ``w_hh``; default
      orthogonal (Keras, Flax).
    bias_init: default zeros.
    param_dtype: dtype of the params (fp32 default).
    dtype: compute dtype of the matmuls (None: the params' dtype); carries,
      gate sums and reductions are in its ``carry_dtype``: fp32 for bf16
      and fp32 compute, float64 for float64 (``jax_enable_x64`` on).
    """

    bias: str = "double"
    kernel_init: Callable = jax.nn.initializers.glorot_uniform()
    recurrent_init: Callable = initializers.orthogonal()
    bias_init: Callable = jax.nn.initializers.zeros
    param_dtype: Any = jnp.float32
    dtype: Any = None

    @property
    def carry_dtype(self) -> jnp.dtype:
        """The carry dtype of params as ``init`` makes them: ``carry_dtype``
        of ``dtype``, or of ``param_dtype`` when ``dtype`` is None."""
        return carry_dtype(self.param_dtype if self.dtype is None else self.dtype)


def make_options(**kwargs) -> CellOptions:
    """The ``CellOptions`` of a cell constructor's ``**options``; an unknown
    keyword is an error listing the known ones."""
    _checks.check_unknown("options", kwargs, CellOptions._fields)
    opts = CellOptions(**kwargs)
    check_choice("bias", opts.bias, BIAS_MODES)
    for name in ("kernel_init", "recurrent_init", "bias_init"):
        if not callable(getattr(opts, name)):
            _checks.fail_type(name, "an initialiser, init(key, shape, dtype)", getattr(opts, name))
    _checks.check_dtype("param_dtype", opts.param_dtype)
    if opts.dtype is not None:
        _checks.check_dtype("dtype", opts.dtype)
    return opts
