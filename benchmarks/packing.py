"""Packed sequences on a long-tailed length distribution: the padding each
layout computes and the CPU time of a training step over all sequences.

    python benchmarks/packing.py            # 256 sequences, lengths ~ lognormal, 2 cores
    python benchmarks/packing.py --smoke    # seconds; part of the tests

Layouts of the same sequences: ``padded`` (one batch padded to the longest,
``seq_lengths``), ``bucketed`` (``rj.bucket_by_length`` batches, each padded
to its longest; one compile per batch shape) and ``packed`` (``rj.pack``
rows of the longest length, ``impl="auto"``: on CPU the C++ backend, which
restarts each sequence in place; ``impl="scan"`` beside it). With PyTorch
installed, its LSTM on the padded batch and on a ``PackedSequence`` are
timed too. One step = forward and
backward of one LSTM layer, loss = mean of y² over the valid steps, every
layout interleaved per round (one untimed call, three timed); the table gives
medians and each layout's speedup over ``padded``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import recurrent_jax as rj

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402


def long_tailed_lengths(num: int, median: float, sigma: float, longest: int, seed: int = 0):
    """Lognormal lengths (median ``median``), clipped to [1, ``longest``]."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.normal(np.log(median), sigma, num))
    return np.clip(np.round(lengths), 1, longest).astype(np.int32)


def steps(lengths, features: int, hidden: int, bucket_size: int):
    """{layout: (slots computed, a callable running one step over all sequences)}."""
    cell = rj.cells.lstm(hidden)
    params = cell.init(jax.random.key(0), features)
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(n, features)).astype(np.float32) for n in lengths]
    total = float(lengths.sum())

    def padded_loss(p, xs, seq_lengths):
        _, ys = rj.unroll(cell, p, xs, seq_lengths=seq_lengths)
        return jnp.sum(ys**2) / total

    def packed_loss(p, packed, impl="auto"):
        _, ys = rj.unroll(cell, p, packed, impl=impl)
        return jnp.sum(ys.data**2) / total

    padded_grad, packed_grad = jax.jit(jax.grad(padded_loss)), jax.jit(jax.grad(packed_loss))
    packed_scan_grad = jax.jit(jax.grad(lambda p, packed: packed_loss(p, packed, "scan")))

    def batch(indices):
        width = int(lengths[indices].max())
        xs = np.zeros((len(indices), width, features), np.float32)
        for i, n in enumerate(indices):
            xs[i, : lengths[n]] = seqs[n]
        return jnp.asarray(xs), jnp.asarray(lengths[indices])

    whole = batch(np.arange(len(lengths)))
    buckets = [batch(b) for b in rj.bucket_by_length(lengths, bucket_size)]
    packed = rj.pack(seqs)
    layouts = {
        "padded": (whole[0].shape[0] * whole[0].shape[1], lambda: padded_grad(params, *whole)),
        "bucketed": (
            sum(x.shape[0] * x.shape[1] for x, _ in buckets),
            lambda: [padded_grad(params, *b) for b in buckets],
        ),
        "packed": (int(np.prod(packed.segment_ids.shape)), lambda: packed_grad(params, packed)),
        "packed, impl=scan": (
            int(np.prod(packed.segment_ids.shape)),
            lambda: packed_scan_grad(params, packed),
        ),
    }
    layouts |= torch_steps(seqs, lengths, features, hidden, whole)
    return {k: (slots, _blocking(fn)) for k, (slots, fn) in layouts.items()}


def torch_steps(seqs, lengths, features, hidden, whole) -> dict:
    try:
        import torch
    except ImportError:
        return {}
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(features, hidden, batch_first=True)
    xs = torch.tensor(np.asarray(whole[0]))
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    mask = (torch.arange(xs.shape[1])[None] < lengths_t[:, None])[..., None]
    total = float(lengths.sum())

    def padded():
        lstm.zero_grad()
        ys = lstm(xs)[0] * mask
        ((ys**2).sum() / total).backward()

    def packed():
        lstm.zero_grad()
        seq = torch.nn.utils.rnn.pack_padded_sequence(
            xs, lengths_t, batch_first=True, enforce_sorted=False
        )
        ys = lstm(seq)[0].data
        ((ys**2).sum() / total).backward()

    slots = xs.shape[0] * xs.shape[1]
    return {"torch padded": (slots, padded), "torch PackedSequence": (int(lengths.sum()), packed)}


def _blocking(fn):
    return lambda: jax.block_until_ready(fn())


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=256, help="sequences")
    parser.add_argument("--median", type=float, default=60.0, help="median length")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma")
    parser.add_argument("--longest", type=int, default=1000, help="clip lengths to this")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--bucket-size", type=int, default=32, help="sequences per bucket")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one round")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num, args.median, args.longest, args.rounds, args.bucket_size = 12, 4.0, 20, 1, 4
        args.features, args.hidden = 3, 4
    lengths = long_tailed_lengths(args.num, args.median, args.sigma, args.longest)
    fns = steps(lengths, args.features, args.hidden, args.bucket_size)
    for _, fn in fns.values():
        fn()  # compile
    medians = _timing.interleaved({k: fn for k, (_, fn) in fns.items()}, args.rounds)
    total = int(lengths.sum())
    results = [
        {
            "layout": name,
            "slots": slots,
            "padding_fraction": 1.0 - total / slots,
            "ms": medians[name],
            "speedup_vs_padded": medians["padded" if "torch" not in name else "torch padded"]
            / medians[name],
        }
        for name, (slots, _) in fns.items()
    ]
    print(
        f"{args.num} sequences, {total} steps (lengths: median {int(np.median(lengths))}, "
        f"max {lengths.max()}); LSTM {args.features}->{args.hidden}, jax {jax.__version__}, "
        f"{jax.devices()[0].device_kind}"
    )
    _timing.print_table(
        ["layout", "slots", "padding", "ms / step", "speedup vs padded"],
        [
            [r["layout"], r["slots"], f"{r['padding_fraction']:.1%}", f"{r['ms']:.1f}",
             f"{r['speedup_vs_padded']:.2f}x"]
            for r in results
        ],
    )  # fmt: skip
    _timing.write_json(args.json, args, results)
    return results


if __name__ == "__main__":
    main()
