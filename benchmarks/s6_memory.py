"""Peak memory of the selective SSM (``rj.cells.s6``) at long T, by backend.

    python benchmarks/s6_memory.py                      # T = 16,384, B = 1, D = 64, N = 16
    python benchmarks/s6_memory.py --steps 4096 --time  # smaller, with step times

The (T, B, D, N) state is what Mamba's fused kernel never stores: a
backend that materialises it (or its coefficients, or their gradients)
pays T·B·D·N·4 bytes per copy, 64 MiB at the default shape. Memory is XLA's
compiled temp allocation (``compiled.memory_analysis()``: its buffer
assignment, what the program needs beyond its inputs and outputs) of the
forward pass and of a training step (``jax.grad`` of Σ ys ⊙ g over params
and xs), time-major. ``--time`` adds the median time of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import recurrent_jax as rj

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402


def programs(cell, impl, chunk_length):
    options = dict(impl=impl, time_major=True, chunk_length=chunk_length)

    def forward(params, xs, cotangent):
        return rj.unroll(cell, params, xs, **options)[1]

    def loss(params, xs, cotangent):
        return jnp.vdot(forward(params, xs, cotangent), cotangent)

    return {"forward": forward, "train": jax.grad(loss, argnums=(0, 1))}


def measure(fn, args, repeats):
    compiled = jax.jit(fn).lower(*args).compile()
    return _timing.temp_and_time(compiled, args, repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--impls", nargs="+", default=["scan", "chunked", "associative"])
    parser.add_argument("--chunk-length", type=int, default=None)
    parser.add_argument("--time", action="store_true", help="also time each program")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    T, B, D, N = args.steps, args.batch, args.channels, args.state
    cell = rj.cells.s6(D, state_size=N, input_proj=False)
    params = cell.init(jax.random.PRNGKey(0), D)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, D))
    cotangent = jax.random.normal(jax.random.PRNGKey(2), (T, B, D))
    state_mib = T * B * D * N * 4 / 2**20
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(f"s6, T={T}, B={B}, D={D}, N={N}, fp32; one (T, B, D, N) copy: {state_mib:.0f} MiB")
    print("| impl | program | temp MiB | / scan | ms |")
    print("|---|---|---|---|---|")
    scan_mib = {}
    for impl in args.impls:
        for name, fn in programs(cell, impl, args.chunk_length).items():
            mib, ms = measure(fn, (params, xs, cotangent), args.repeats if args.time else 0)
            scan_mib.setdefault(name, mib)  # the first impl is the reference
            ratio = mib / scan_mib[name] if scan_mib[name] else float("nan")
            shown = "-" if ms is None else f"{ms:.1f}"
            print(f"| {impl} | {name} | {mib:.1f} | {ratio:.2f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
