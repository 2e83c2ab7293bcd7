"""Multi-head (block-diagonal) recurrences: parameters and training-step time
of 1, 4 and 16 heads of an LSTM at H = 512 and 1024, interleaved in one
process.

    python benchmarks/heads.py            # B=16, T=64, D=H; 2 cores: a few minutes
    python benchmarks/heads.py --smoke    # seconds; part of the tests

One step = forward and backward of one layer, loss = mean(y²), gradients
w.r.t. the weights and the inputs. The dense cell (``num_heads=None``) runs
the engine's ``auto`` backend; heads run the scan (their recurrent product
is a batched GEMM of n blocks, which the fused and kernel backends do not
implement). Each round runs every configuration once untimed and three
times timed; the table gives medians, ratios to the dense cell and the
recurrent weights' share of the parameters.
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

HEADS = (None, 1, 4, 16)


def training_step(hidden: int, num_heads, batch: int, steps: int):
    cell = rj.cells.lstm(hidden, num_heads=num_heads)
    params = cell.init(jax.random.key(0), hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, hidden))

    def loss(p, x):
        return jnp.mean(rj.unroll(cell, p, x)[1] ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    count = sum(x.size for x in jax.tree_util.tree_leaves(params))
    return count, params["w_hh"].size, lambda: jax.block_until_ready(grad(params, xs))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one round")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.hidden, args.batch, args.steps, args.rounds = [32], 2, 4, 1
    results = []
    for hidden in args.hidden:
        setups = {h: training_step(hidden, h, args.batch, args.steps) for h in HEADS}
        for _, _, fn in setups.values():
            fn()  # compile
        medians = _timing.interleaved({h: fn for h, (_, _, fn) in setups.items()}, args.rounds)
        for heads, (count, recurrent, _) in setups.items():
            results.append(
                {
                    "hidden": hidden,
                    "heads": heads or "dense",
                    "params": count,
                    "recurrent_params": recurrent,
                    "ms": medians[heads],
                    "vs_dense": medians[None] / medians[heads],
                }
            )
    print(
        f"LSTM training step, B={args.batch}, T={args.steps}, D=H; jax {jax.__version__}, "
        f"{jax.devices()[0].device_kind}"
    )
    _timing.print_table(
        ["H", "heads", "params", "W_hh params", "ms / step", "speed vs dense"],
        [
            [r["hidden"], r["heads"], f"{r['params']:,}", f"{r['recurrent_params']:,}",
             f"{r['ms']:.1f}", f"{r['vs_dense']:.2f}x"]
            for r in results
        ],
    )  # fmt: skip
    _timing.write_json(args.json, args, results)
    return results


if __name__ == "__main__":
    main()
