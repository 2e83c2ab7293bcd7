"""Parallel-in-time vs sequential training steps on the present device.

    python benchmarks/parallel_speed.py                # T = 512, 4096
    python benchmarks/parallel_speed.py --long         # also T = 65,536
    python benchmarks/parallel_speed.py --crossover    # T where associative beats scan
    python benchmarks/parallel_speed.py --deer         # DEER vs sequential GRU, iterations
    python benchmarks/parallel_speed.py --recurrence   # the bare h = a h + b, four solvers

A training step is ``jit(grad(loss))`` of ``mean(ys²)`` over one ``rj.unroll``
layer; times are the median of ``--repeats`` runs after compilation. Ratios
are the sequential baseline's time over the row's time (> 1: faster), for the
same cell's ``impl="scan"`` and for our own sequential GRU/LSTM (fused) of the
same hidden size.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import recurrent_jax as rj

ROWS = [  # (cell name, constructor, impls, sequential baseline of the ratio)
    ("gru", rj.cells.gru, ("fused",), None),
    ("lstm", rj.cells.lstm, ("fused",), None),
    ("mingru", rj.cells.mingru, ("scan", "associative", "chunked"), "gru"),
    ("mingru-log", lambda h: rj.cells.mingru(h, log_space=True), ("associative", "chunked"), "gru"),
    ("minlstm", rj.cells.minlstm, ("scan", "associative", "chunked"), "lstm"),
    ("lru", rj.cells.lru, ("scan", "associative", "chunked"), "gru"),
    ("rglru", rj.cells.rglru, ("associative",), "gru"),
]


def train_step(cell, impl, chunk_length):
    options = dict(impl=impl, chunk_length=chunk_length)
    if impl == "deer-quasi":
        options = dict(impl="deer", deer_quasi=True)

    def loss(params, xs):
        _, ys = rj.unroll(cell, params, xs, **options)
        return jnp.mean(jnp.square(ys))

    return jax.jit(jax.grad(loss))


def time_step(make_cell, impl, T, args):
    cell = make_cell(args.hidden)
    rng = np.random.default_rng(0)
    params = cell.init(jax.random.PRNGKey(0), args.input)
    xs = jnp.asarray(rng.standard_normal((args.batch, T, args.input)), jnp.float32)
    step = train_step(cell, impl, args.chunk_length)
    jax.block_until_ready(step(params, xs))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(params, xs))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(args):
    lengths = args.lengths or [512, 4096] + ([65_536] if args.long else [])
    print(f"device: {jax.devices()[0].device_kind}  H={args.hidden} D={args.input} B={args.batch}")
    print(f"{'cell':<11} {'impl':<12} {'T':>6} {'ms/step':>9} {'vs scan':>8} {'vs GRU/LSTM':>12}")
    for T in lengths:
        own = {}  # sequential time of each cell at this T
        for name, make, impls, baseline in ROWS:
            for impl in impls:
                sequential = impl in ("scan", "fused")
                if T > 4096 and sequential and not args.long_sequential:
                    continue
                ms = 1e3 * time_step(make, impl, T, args)
                if sequential:
                    own[name] = ms
                vs_scan = f"{own[name] / ms:8.2f}" if name in own and not sequential else " " * 8
                vs_base = f"{own[baseline] / ms:12.2f}" if baseline in own else " " * 12
                print(f"{name:<11} {impl:<12} {T:>6} {ms:9.2f} {vs_scan} {vs_base}", flush=True)


def crossover(args):
    print(f"device: {jax.devices()[0].device_kind}  minGRU H={args.hidden} B={args.batch}")
    print(f"{'T':>6} {'scan ms':>9} {'assoc ms':>9} {'ratio':>7}")
    found = None
    for T in [64, 128, 256, 512, 1024, 2048, 4096, 8192]:
        scan = 1e3 * time_step(rj.cells.mingru, "scan", T, args)
        assoc = 1e3 * time_step(rj.cells.mingru, "associative", T, args)
        print(f"{T:>6} {scan:9.3f} {assoc:9.3f} {scan / assoc:7.2f}", flush=True)
        if found is None and assoc < scan:
            found = T
    print(f"crossover T (first T where associative is faster): {found}")


def deer_table(args):
    """GRU training step by DEER (and quasi-DEER) vs the sequential fused
    scan, with the Newton iterations DEER needed, at growing T. The init
    scale makes the GRU contracting (a small recurrent kernel), the regime
    where DEER converges fast."""
    print(f"device: {jax.devices()[0].device_kind}  GRU H={args.hidden} B={args.batch}")
    print(f"{'T':>6} {'fused ms':>9} {'deer ms':>9} {'iters':>6} {'quasi ms':>9} {'iters':>6}")
    cell = rj.cells.gru(args.hidden)
    params = cell.init(jax.random.PRNGKey(0), args.input)
    found = None
    for T in args.lengths or [64, 256, 1024, 4096, 16384]:
        xs = jnp.asarray(np.random.default_rng(0).standard_normal((args.batch, T, args.input)))
        xs = xs.astype(jnp.float32)
        fused = 1e3 * time_step(rj.cells.gru, "fused", T, args)
        deer_ms = 1e3 * time_step(rj.cells.gru, "deer", T, args)
        quasi_ms = 1e3 * time_step(rj.cells.gru, "deer-quasi", T, args)
        iters = [
            int(rj.deer.trajectory(cell, params, xs, quasi=q, tol=1e-5)[1].iterations)
            for q in (False, True)
        ]
        print(
            f"{T:>6} {fused:9.2f} {deer_ms:9.2f} {iters[0]:>6} {quasi_ms:9.2f} {iters[1]:>6}",
            flush=True,
        )
        if found is None and min(deer_ms, quasi_ms) < fused:
            found = T
    print(f"crossover T (first T where DEER beats the sequential scan): {found}")


def two_level(a, b, h0, block):
    """All states of ``h_t = a_t h_{t−1} + b_t`` by the work-efficient
    two-level schedule: T/L blocks of L steps advanced side by side (L
    sequential steps, each over all blocks), the blocks' end states chained
    (T/L steps), then one fix-up pass. ~3× the scan's arithmetic in wide
    vector operations, L + T/L loop steps instead of T."""
    blocks = lambda x: jnp.swapaxes(x.reshape(-1, block, *x.shape[1:]), 0, 1)  # noqa: E731
    a_blocks, b_blocks = blocks(a), blocks(b)

    def inside(carry, ab):  # (products of a, state from 0) within every block
        product, h = carry
        product, h = ab[0] * product, ab[0] * h + ab[1]
        return (product, h), (product, h)

    ones = jnp.ones(a_blocks.shape[1:], a.dtype)
    _, (products, local) = jax.lax.scan(inside, (ones, jnp.zeros_like(ones)), (a_blocks, b_blocks))
    chain = lambda h, pl: (pl[0] * h + pl[1],) * 2  # noqa: E731
    _, ends = jax.lax.scan(chain, h0, (products[-1], local[-1]))
    starts = jnp.concatenate([h0[None], ends[:-1]], axis=0)
    states = local + products * starts[None]
    return jnp.swapaxes(states, 0, 1).reshape(a.shape)


def recurrence_table(args):
    """The bare recurrence ``h_t = a_t h_{t−1} + b_t`` (no cell around it) at
    (T, B, S), forward and gradient: the sequential ``lax.scan``, the
    library's associative and chunked solvers (``rj.parallel.solve``), and
    the two-level schedule above; interleaved rounds (``_timing``)."""
    for T in args.lengths or [16_384]:
        print(f"device: {jax.devices()[0].device_kind}  T={T} B={args.batch} S={args.hidden}")
        ms = recurrence_times((T, args.batch, args.hidden), args.repeats)
        for name in RECURRENCE_SOLVERS:
            ratio = {kind: ms["scan", kind] / ms[name, kind] for kind in ("forward", "gradient")}
            line = "  ".join(
                f"{kind} {ms[name, kind]:8.1f} ms ({ratio[kind]:.2f}x the scan)" for kind in ratio
            )
            print(f"{name:<12} {line}", flush=True)


def _sequential(a, b, h0):
    return jax.lax.scan(lambda h, ab: (ab[0] * h + ab[1],) * 2, h0, (a, b))[1]


RECURRENCE_SOLVERS = {
    "scan": _sequential,
    "associative": lambda a, b, h0: rj.parallel.solve(a, b, h0),
    "chunked": lambda a, b, h0: rj.parallel.solve(a, b, h0, chunk_length=256),
    "two-level": lambda a, b, h0: two_level(a, b, h0, 128),
}


def recurrence_times(shape, rounds) -> dict:
    """{(solver, "forward" | "gradient"): median ms} at ``shape`` (T, B, S),
    each solver first checked against the scan."""
    import _timing

    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.uniform(key_a, shape, minval=0.9, maxval=0.999)
    b = jax.random.normal(key_b, shape)
    h0 = jnp.zeros(shape[1:])
    want = jax.jit(_sequential)(a, b, h0)
    programs = {}
    for name, solver in RECURRENCE_SOLVERS.items():
        forward = jax.jit(solver)
        error = float(jnp.max(jnp.abs(forward(a, b, h0) - want)))
        assert error < 1e-3 * float(jnp.max(jnp.abs(want))), (name, error)
        grad = jax.jit(jax.grad(lambda a, b, s=solver: jnp.sum(s(a, b, h0) ** 2), (0, 1)))
        programs[name, "forward"] = functools.partial(forward, a, b, h0)
        programs[name, "gradient"] = functools.partial(grad, a, b)
    timed = {key: lambda f=f: jax.block_until_ready(f()) for key, f in programs.items()}
    return _timing.interleaved(timed, rounds=rounds, calls=1, warmup=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--input", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chunk-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long", action="store_true", help="add T = 65,536")
    parser.add_argument(
        "--long-sequential", action="store_true", help="also time sequential rows at T = 65,536"
    )
    parser.add_argument("--crossover", action="store_true")
    parser.add_argument("--deer", action="store_true", help="DEER vs sequential GRU")
    parser.add_argument("--lengths", nargs="+", type=int, default=None, help="values of T")
    parser.add_argument(
        "--recurrence", action="store_true", help="the bare linear recurrence, four solvers"
    )
    args = parser.parse_args()
    if args.recurrence:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        recurrence_table(args)
    elif args.deer:
        deer_table(args)
    elif args.crossover:
        crossover(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
