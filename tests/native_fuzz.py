"""Cases for ``test_cpu_fuzz.py``: wrong shapes fed to the CPU backend.

Run as a script, ``python native_fuzz.py I J ...`` runs the cases with those
indices in order and prints ``start I`` before and ``done I <verdict>``
after each, so that a case that aborts the process (a memory error) is
named by its ``start`` line without a ``done``. A verdict is ``ok`` when
the library raised a clear error (a ``ValueError``/``TypeError`` naming the
argument, or an ``INVALID_ARGUMENT`` from a native handler naming the
buffer), else ``bad <what happened>``.

Two kinds of case, drawn from a seeded generator over shapes:
- ``unroll``: ``rj.unroll`` on the native path (``impl="cpu"`` or "auto")
  with one of params, initial carry, inputs or lengths wrong;
- ``ffi``: a native handler called directly (``jax.ffi.ffi_call``, past
  every Python check) with one buffer's shape or dtype wrong.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np


class Case(NamedTuple):
    kind: str  # "unroll" or "ffi"
    cell: str  # "lstm" or "gru"
    sizes: tuple  # (B, T, D, H)
    what: str  # what is wrong
    expect: str  # a word the error must contain
    impl: str = "cpu"


_UNROLL_FAULTS = (
    ("params of the other cell", "params"),
    ("params of another hidden size", "params"),
    ("params for another input size", "xs"),
    ("params missing w_hh", "params"),
    ("params with an extra leaf", "params"),
    ("carry of another hidden size", "initial_carry"),
    ("carry of another batch size", "initial_carry"),
    ("carry of the wrong structure", "initial_carry"),
    ("integer inputs", "xs"),
    ("inputs of rank 1", "xs"),
    ("lengths past T", "seq_lengths"),
    ("negative lengths", "seq_lengths"),
    ("float lengths", "seq_lengths"),
    ("lengths of another batch shape", "seq_lengths"),
    ("mask of another shape", "mask"),
)


def cases(count: int = 40, seed: int = 0) -> list[Case]:
    """``count`` cases of each kind over random sizes (deterministic)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        sizes = tuple(int(v) for v in rng.integers(1, 12, 4))
        cell = ("lstm", "gru")[i % 2]
        what, expect = _UNROLL_FAULTS[i % len(_UNROLL_FAULTS)]
        out.append(Case("unroll", cell, sizes, what, expect, ("cpu", "auto")[(i // 2) % 2]))
    for i in range(count):
        sizes = tuple(int(v) for v in rng.integers(1, 12, 4))
        cell = ("lstm", "gru")[i % 2]
        target = ("forward", "infer", "backward")[(i // 2) % 3]
        operands = _ffi_operands(cell, target, sizes)
        name = list(operands)[int(rng.integers(len(operands)))]
        fault = ("shape", "rank", "dtype", "runs")[int(rng.integers(4))]
        out.append(Case("ffi", cell, sizes, f"{target} {name} {fault}", name))
    return out


# --- rj.unroll ------------------------------------------------------------------


def run_unroll(case: Case) -> None:
    import jax
    import jax.numpy as jnp

    import recurrent_jax as rj

    batch, steps, features, hidden = case.sizes
    make = rj.cells.REGISTRY[case.cell]
    other = rj.cells.REGISTRY["gru" if case.cell == "lstm" else "lstm"]
    cell = make(hidden)
    key = jax.random.PRNGKey(0)
    params = cell.init(key, features)
    xs = jnp.ones((batch, steps, features), jnp.float32)
    kw = {}
    what = case.what
    if what == "params of the other cell":
        params = other(hidden).init(key, features)
    elif what == "params of another hidden size":
        params = make(hidden + 1).init(key, features)
    elif what == "params for another input size":
        params = make(hidden).init(key, features + 1)
    elif what == "params missing w_hh":
        params = {k: v for k, v in params.items() if k != "w_hh"}
    elif what == "params with an extra leaf":
        params = params | {"w_extra": jnp.ones((hidden, hidden))}
    elif what.startswith("carry"):
        carry = cell.initial_carry((batch,))
        if what == "carry of another hidden size":
            carry = jax.tree_util.tree_map(lambda c: jnp.ones((batch, hidden + 1)), carry)
        elif what == "carry of another batch size":
            carry = jax.tree_util.tree_map(lambda c: jnp.ones((batch + 1, hidden)), carry)
        else:
            carry = (carry, carry)
        kw["initial_carry"] = carry
    elif what == "integer inputs":
        xs = xs.astype(jnp.int32)
    elif what == "inputs of rank 1":
        xs = xs[0, 0]
    elif what == "lengths past T":
        kw["seq_lengths"] = np.full((batch,), steps + 1)
    elif what == "negative lengths":
        kw["seq_lengths"] = np.full((batch,), -1)
    elif what == "float lengths":
        kw["seq_lengths"] = np.full((batch,), 1.5)
    elif what == "lengths of another batch shape":
        kw["seq_lengths"] = np.full((batch + 1,), 1)
    elif what == "mask of another shape":
        kw["mask"] = np.ones((batch, steps + 1), bool)
    carry, ys = rj.unroll(cell, params, xs, impl=case.impl, **kw)
    jax.block_until_ready(ys)


# --- the handlers, directly ---------------------------------------------------------


def _ffi_operands(cell: str, target: str, sizes) -> dict:
    """Operand name -> shape of a native call, in argument then result order."""
    batch, steps, features, hidden = sizes
    g = (4 if cell == "lstm" else 3) * hidden
    seq, carry, gates = (steps, batch, hidden), (batch, hidden), (steps, batch, g)
    x, valid, w_ih, w_hh = (steps, batch, features), (steps, batch), (features, g), (hidden, g)
    if cell == "lstm":
        inputs = [("x", x), ("valid", valid), ("w_ih", w_ih), ("bias", (g,)), ("w_hh", w_hh)]
        inputs += [("h0", carry), ("c0", carry), ("reset_h", carry), ("reset_c", carry)]
        outputs = [("ys", seq), ("h_last", carry), ("c_last", carry)]
        outputs += [("h_all", seq), ("c_all", seq)]
        residuals = [("gates", gates), ("h_prev", seq), ("c_prev", seq)]
        cotangents = [("d_ys", seq), ("d_h_last", carry), ("d_c_last", carry)]
        cotangents += [("d_h_all", seq), ("d_c_all", seq)]
        gradients = [("d_x", x), ("d_w_ih", w_ih), ("d_bias", (g,)), ("d_w_hh", w_hh)]
        gradients += [("d_h0", carry), ("d_c0", carry), ("d_reset_h", carry), ("d_reset_c", carry)]
    else:
        inputs = [("x", x), ("valid", valid), ("w_ih", w_ih), ("bias", (g,)), ("w_hh", w_hh)]
        inputs += [("b_hn", (hidden,)), ("h0", carry), ("reset_h", carry)]
        outputs = [("ys", seq), ("h_last", carry), ("h_all", seq)]
        residuals = [("gates", gates), ("hn", seq), ("h_prev", seq)]
        cotangents = [("d_ys", seq), ("d_h_last", carry), ("d_h_all", seq)]
        gradients = [("d_x", x), ("d_w_ih", w_ih), ("d_bias", (g,)), ("d_w_hh", w_hh)]
        gradients += [("d_b_hn", (hidden,)), ("d_h0", carry), ("d_reset_h", carry)]
    weights = [("x", x), ("valid", valid), ("w_ih", w_ih), ("w_hh", w_hh)]
    table = {
        "forward": inputs + outputs + residuals,
        "infer": inputs + outputs,
        "backward": weights + residuals + cotangents + gradients,
    }
    return dict(table[target])


_NUM_ARGS = {
    ("lstm", "forward"): 9,
    ("lstm", "infer"): 9,
    ("lstm", "backward"): 12,
    ("gru", "forward"): 8,
    ("gru", "infer"): 8,
    ("gru", "backward"): 10,
}


def run_ffi(case: Case) -> None:
    import jax
    import jax.numpy as jnp

    from recurrent_jax import cpu

    reason = cpu.unavailable()
    if reason is not None:
        raise RuntimeError(f"skip: {reason}")
    target, name, fault = case.what.split()
    operands = _ffi_operands(case.cell, target, case.sizes)
    dtypes = {n: jnp.float32 for n in operands}
    shapes = dict(operands)
    if fault == "shape":
        shape = list(shapes[name])
        axis = len(shape) - 1
        shape[axis] = shape[axis] + (4 if name == "gates" else 1)
        shapes[name] = tuple(shape)
    elif fault == "rank":
        shapes[name] = shapes[name][1:] if len(shapes[name]) > 1 else (1, *shapes[name])
    elif fault == "dtype":
        dtypes[name] = jnp.bfloat16
    else:  # a run axis on this operand alone
        shapes[name] = (2, *shapes[name])
    num_args = _NUM_ARGS[(case.cell, target)]
    names = list(operands)
    args = [jnp.zeros(shapes[n], dtypes[n]) for n in names[:num_args]]
    results = [jax.ShapeDtypeStruct(shapes[n], dtypes[n]) for n in names[num_args:]]
    call = jax.ffi.ffi_call(f"recurrent_jax_{case.cell}_{target}", results)
    jax.block_until_ready(call(*args))


# --- the runner -------------------------------------------------------------------


def verdict(case: Case) -> str:
    import jax

    try:
        (run_unroll if case.kind == "unroll" else run_ffi)(case)
    except (ValueError, TypeError) as error:
        if case.kind == "unroll" and case.expect in str(error):
            return "ok"
        return f"bad {type(error).__name__} without {case.expect!r}: {error}"
    except jax.errors.JaxRuntimeError as error:
        text = str(error)
        if case.kind == "ffi" and "INVALID_ARGUMENT" in text and _names(case, text):
            return "ok"
        return f"bad JaxRuntimeError: {text.splitlines()[0]}"
    except RuntimeError as error:
        if str(error).startswith("skip:"):
            return f"skip {error}"
        raise
    return "bad: no error was raised"


def _names(case: Case, text: str) -> bool:
    """Whether a native error names the broken buffer; when that is x, which
    the sizes T, B and I are read from, naming any buffer of the call is
    right, since the others then disagree with it."""
    operands = list(_ffi_operands(case.cell, case.what.split()[0], case.sizes))
    names = operands if case.expect == "x" else [case.expect]
    return any(f" {name}:" in text for name in names)


def main(indices: list[int]) -> None:
    all_cases = cases()
    for i in indices:
        print(f"start {i}", flush=True)
        print(f"done {i} {verdict(all_cases[i])}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
