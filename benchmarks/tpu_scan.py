"""The TPU kernel for linear recurrences (``impl="pallas_tpu"``) against
``lax.associative_scan`` and ``lax.scan`` on the present device.

    python benchmarks/tpu_scan.py --json out.json     # on a TPU host
    python benchmarks/tpu_scan.py --smoke             # tiny shapes, any host

1. Check: ``rj.unroll`` with the kernel against the plain scan for every
   linear cell (LRU, RG-LRU, minGRU, log-space minLSTM, S4D, S5, LinOSS,
   D-LinOSS, S6; values and gradients; padding, resets, reverse), natively;
   on a host of several devices also a sweep sharded over all of them (the
   kernel partitioned by rows).
2. Time ``h_t = a_t h_{t−1} + b_t`` over (B, T, N) at the issue's shapes,
   real, complex and 2×2 blocks (N/2 units of 2, so that the state holds N
   reals as the real form's), forward and forward + backward (the gradient
   of ``sum(states · w)``): the kernel (``pallas_tpu.scan``), the associative
   scan (``parallel.solve``, what ``impl="associative"`` runs) and ``lax.scan``
   of the same step; each also checked against the scan (max |difference|).
3. The kernel's blocks: time blocks of 64-256 steps, row blocks of 8-32
   rows of 128 lanes, so that the first TPU run picks the defaults.

Expectation, written before any TPU run: the kernel at least 2× faster than
the associative scan at these shapes, as recurrentgemma reports for its
kernel of the same design. Nothing here has been timed on a TPU yet.
Elsewhere the kernel runs in interpret mode and its times mean nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import recurrent_jax as rj
from recurrent_jax import pallas_tpu, parallel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, print_table, write_json  # noqa: E402

SHAPES = [(16, 4096, 256), (64, 1024, 1024)]  # (B, T, N)
SMOKE_SHAPES = [(2, 20, 16)]
CELLS = {
    "lru": lambda h: rj.cells.lru(h),
    "rglru": rj.cells.rglru,
    "mingru": rj.cells.mingru,
    "minlstm-log": lambda h: rj.cells.minlstm(h, log_space=True),
    "s4d": rj.cells.s4d,
    "s5": rj.cells.s5,
    "linoss": rj.cells.linoss,
    "d-linoss": lambda h: rj.cells.linoss(h, damping=True),
    "s6": rj.cells.s6,
}
FORMS = ("real", "complex", "block")


def sequential(a, b, h0):
    def step(h, ab):
        a_t, b_t = ab
        h = (jnp.einsum("...ij,...j->...i", a_t, h) if a_t.ndim > b_t.ndim else a_t * h) + b_t
        return h, h

    return jax.lax.scan(step, h0, (a, b))[1]


SOLVERS = {  # name: solver(form) -> (a, b, h0) -> states
    "kernel": lambda form: pallas_tpu.scan,
    "associative": lambda form: lambda a, b, h0: parallel.solve(a, b, h0, form=form),
    "scan": lambda form: sequential,
}


def coefficients(form, shape, seed=0):
    """Time-major a, b (T, B, N) with |a| in [0.9, 1) and h0 (B, N); for
    blocks a (T, B, N/2, 2, 2) of spectral norm in [0.9, 1), b (T, B, N/2, 2)
    and h0 (B, N/2, 2)."""
    batch, steps, units = shape
    rng = np.random.default_rng(seed)
    size = (steps, batch, units)
    if form == "block":
        size = (steps, batch, units // 2)
        a = rng.standard_normal((*size, 2, 2))
        norm = np.linalg.norm(a, 2, axis=(-2, -1))[..., None, None]
        a *= rng.uniform(0.9, 1.0, (*size, 1, 1)) / norm
        b, h0 = rng.standard_normal((*size, 2)), rng.standard_normal((*size[1:], 2))
        return tuple(jnp.asarray(x.astype(np.float32)) for x in (a, b, h0))
    a = rng.uniform(0.9, 1.0, size)
    b = rng.standard_normal(size)
    h0 = rng.standard_normal(size[1:])
    if form == "complex":
        a = a * np.exp(1j * rng.uniform(0, 0.1, size))
        b, h0 = b + 1j * rng.standard_normal(size), h0 + 0j
    dtype = np.complex64 if form == "complex" else np.float32
    return tuple(jnp.asarray(x.astype(dtype)) for x in (a, b, h0))


def programs(solver, args):
    """Compiled forward and forward + backward of ``solver`` at ``args``."""
    weights = jnp.ones_like(args[1])

    def loss(a, b, h0):
        return jnp.real(jnp.sum(solver(a, b, h0) * weights))

    forward = jax.jit(solver).lower(*args).compile()
    backward = jax.jit(jax.grad(loss, (0, 1, 2))).lower(*args).compile()
    return forward, backward


def time_solvers(form, shape, rounds, solvers):
    args = coefficients(form, shape)
    compiled = {name: programs(solver(form), args) for name, solver in solvers.items()}
    want = compiled["scan"][0](*args)
    errors = {
        name: float(jnp.max(jnp.abs(fwd(*args) - want))) for name, (fwd, _) in compiled.items()
    }
    calls = {
        f"{name} {part}": (lambda f=f: jax.block_until_ready(f(*args)))
        for name, pair in compiled.items()
        for part, f in zip(("forward", "train"), pair, strict=True)
    }
    ms = interleaved(calls, rounds)
    return [
        dict(
            form=form,
            shape=list(shape),
            solver=name,
            forward_ms=ms[f"{name} forward"],
            train_ms=ms[f"{name} train"],
            max_abs_error=errors[name],
        )
        for name in solvers
    ]


def check_cells(smoke):
    """The kernel's ``difference`` from the scan in outputs, final carries and
    gradients, per cell."""
    batch, steps, hidden, inputs = (3, 37, 16, 8) if smoke else (8, 700, 256, 64)
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.standard_normal((batch, steps, inputs)), jnp.float32)
    lengths = jnp.asarray(rng.integers(0, steps + 1, batch))
    resets = jnp.asarray(rng.random((batch, steps)) < 0.05)
    rows = []
    for name, make in list(CELLS.items())[: 1 if smoke else None]:
        cell = make(hidden)
        params = cell.init(jax.random.key(0), inputs)

        def run(impl, cell=cell, params=params):
            def outputs(p):
                kw = dict(seq_lengths=lengths, resets=resets, reverse=True, impl=impl)
                return rj.unroll(cell, p, xs, **kw)

            def loss(p):
                final, ys = outputs(p)
                return jnp.sum(jnp.sin(ys)) + jnp.sum(final**2)

            return jax.jit(lambda p: (outputs(p), jax.grad(loss)(p)))(params)

        rows.append(dict(cell=name, difference=difference(run("pallas_tpu"), run("scan"))))
    return rows


def difference(got, want) -> float:
    """The largest normwise difference of two trees: per leaf
    max |got − want| / max(1, max |want|)."""
    diffs = jax.tree_util.tree_map(
        lambda g, w: float(jnp.max(jnp.abs(g - w)) / jnp.maximum(1.0, jnp.max(jnp.abs(w)))),
        got,
        want,
    )
    return max(jax.tree_util.tree_leaves(diffs))


def check_mesh():
    """The kernel's ``difference`` from the scan for a sweep of minGRU runs
    sharded over every device (the kernel partitioned by rows), or None on
    one device."""
    devices = jax.devices()
    if len(devices) == 1:
        return None
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(devices), ("runs",))
    cell = rj.cells.mingru(256)
    keys = jax.random.split(jax.random.key(0), 2 * len(devices))
    params = jax.vmap(lambda k: cell.init(k, 64))(keys)
    xs = jnp.asarray(np.random.default_rng(2).standard_normal((8, 512, 64)), jnp.float32)

    def sweep(impl):
        loss = lambda p: jnp.sum(jnp.sin(rj.unroll(cell, p, xs, impl=impl)[1]))  # noqa: E731
        return jax.jit(jax.vmap(jax.value_and_grad(loss), spmd_axis_name="runs"))

    sharded = jax.device_put(params, NamedSharding(mesh, P("runs")))
    return difference(sweep("pallas_tpu")(sharded), sweep("scan")(sharded))


def time_blocks(shape, rounds):
    """Forward + backward ms of the kernel per (time_block, row_block)."""
    args = coefficients("real", shape)
    solvers = {
        f"{tb}x{rb}": (
            lambda a, b, h0, tb=tb, rb=rb: pallas_tpu.scan(a, b, h0, time_block=tb, row_block=rb)
        )
        for tb in (64, 128, 256)
        for rb in (8, 16, 32)
    }
    calls = {}
    for name, solver in solvers.items():
        backward = programs(solver, args)[1]
        calls[name] = lambda f=backward: jax.block_until_ready(f(*args))
    return [
        dict(shape=list(shape), blocks=k, train_ms=v) for k, v in interleaved(calls, rounds).items()
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, any host")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    if device.platform != "tpu" and not args.smoke:
        sys.exit(f"needs a TPU (found {device.platform}); --smoke runs the kernel interpreted")
    shapes = SMOKE_SHAPES if args.smoke else SHAPES  # smoke: one cell
    results = dict(
        device=device.device_kind,
        jax=jax.__version__,
        cells=check_cells(args.smoke),
        mesh_difference=None if args.smoke else check_mesh(),
        solvers=[
            row
            for shape in shapes
            for form in FORMS
            for row in time_solvers(form, shape, args.rounds, SOLVERS)
        ],
        blocks=[]
        if args.smoke
        else [row for shape in shapes for row in time_blocks(shape, args.rounds)],
    )
    report(results)
    write_json(args.json, args, results)
    return results


def report(results):
    print(f"{results['device']}, jax {results['jax']}")
    mesh = results["mesh_difference"]
    if mesh is not None:
        print(f"a sweep over all devices: kernel against scan, normwise {mesh:.2e}")
    print_table(
        ["cell", "kernel against scan, normwise"],
        [(r["cell"], f"{r['difference']:.2e}") for r in results["cells"]],
    )
    by_key = {(r["form"], tuple(r["shape"]), r["solver"]): r for r in results["solvers"]}
    rows = []
    for (form, shape, solver), r in by_key.items():
        kernel = by_key[(form, shape, "kernel")]
        rows.append(
            (
                form,
                "x".join(map(str, shape)),
                solver,
                f"{r['forward_ms']:.3f}",
                f"{r['train_ms']:.3f}",
                f"{r['train_ms'] / kernel['train_ms']:.2f}",
                f"{r['max_abs_error']:.1e}",
            )
        )
    print()
    print_table(
        ["form", "B x T x N", "solver", "forward ms", "train ms", "train / kernel", "max |error|"],
        rows,
    )
    if results["blocks"]:
        print()
        print_table(
            ["B x T x N", "time x row block", "train ms"],
            [
                ("x".join(map(str, r["shape"])), r["blocks"], f"{r['train_ms']:.3f}")
                for r in results["blocks"]
            ],
        )


if __name__ == "__main__":
    main()
