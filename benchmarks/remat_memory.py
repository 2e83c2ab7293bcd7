"""Activation memory and time of a long-sequence training step, with and
without rematerialisation (``unroll(..., remat=k)``).

    python benchmarks/remat_memory.py                 # T = 65,536, B = 8, I = H = 256
    python benchmarks/remat_memory.py --steps 4096    # smaller
    python benchmarks/remat_memory.py --no-time       # memory only (compile, no run)

The step is the layer's VJP for a given output cotangent g (loss = Σ ys ⊙ g),
time-major so that no transposed copy of xs is needed. Memory is XLA's
compiled temp allocation for ``jit(grad(loss))`` (its buffer assignment: what
the step needs beyond its inputs and outputs), read from
``compiled.memory_analysis()``: the stored activations. The inputs (xs, g,
params) and the gradients are not counted. ``--batch-major`` adds the
transposes of a (B, T, ·) layout (xs, g and dxs: 3 copies of T·B·H floats).
Time is the median of ``--repeats`` steps.
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


def step_fn(cell, impl, remat, time_major):
    def loss(params, xs, cotangent):
        options = dict(impl=impl, remat=remat, time_major=time_major)
        return jnp.vdot(rj.unroll(cell, params, xs, **options)[1], cotangent)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def measure(cell, impl, remat, args, repeats, time_major):
    compiled = step_fn(cell, impl, remat, time_major).lower(*args).compile()
    return _timing.temp_and_time(compiled, args, repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--impls", nargs="+", default=["fused", "scan"])
    parser.add_argument("--remats", nargs="+", type=int, default=[0, 256, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-time", action="store_true", help="memory only")
    parser.add_argument("--batch-major", action="store_true", help="(B, T, ·) layout")
    args = parser.parse_args(argv)
    B, T, H = args.batch, args.steps, args.hidden
    cell = rj.cells.lstm(H)
    params = cell.init(jax.random.PRNGKey(0), H)
    shape = (B, T, H) if args.batch_major else (T, B, H)
    xs = jax.random.normal(jax.random.PRNGKey(1), shape)
    cotangent = jax.random.normal(jax.random.PRNGKey(2), shape)
    layout = "batch-major" if args.batch_major else "time-major"
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(f"LSTM training step, B={B}, T={T}, I=H={H}, {layout}")
    print("| impl | remat | activation MiB | step ms |")
    print("|---|---|---|---|")
    for impl in args.impls:
        for k in args.remats:
            repeats = 0 if args.no_time else args.repeats
            step_args = (params, xs, cotangent)
            mib, ms = measure(cell, impl, k or None, step_args, repeats, not args.batch_major)
            shown = "-" if ms is None else f"{ms:.1f}"
            print(f"| {impl} | {k or 'off'} | {mib:.0f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
