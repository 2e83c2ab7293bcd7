"""CPU training step and forward: recurrent_jax's ``impl="auto"`` against
PyTorch's CPU LSTM/GRU and Flax's ``nn.RNN`` (its fastest cell), interleaved
in one process.

    python benchmarks/cpu_step.py                 # the issue's shapes, 2 cores
    python benchmarks/cpu_step.py --smoke         # seconds; part of the tests
    python benchmarks/cpu_step.py --growth        # cost against T, LSTM B=16 I=64 H=128

One training step = forward + backward of one layer, loss = mean(y²),
gradients w.r.t. the weights and the inputs. Every round runs each
implementation in turn (one untimed call, then three timed ones; see
``interleaved``), so machine noise hits all alike; the table gives medians
and the ratios peer / ours (> 1: we are faster).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import recurrent_jax as rj

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

SHAPES = [(32, 128, 128, 128), (16, 64, 64, 64), (64, 256, 64, 256)]
SMOKE_SHAPES = [(4, 6, 3, 8)]
GROWTH_LENGTHS = [16, 64, 256, 1024, 4096]
GROWTH_SHAPE = (16, None, 64, 128)  # B, T, I, H
FLAX_CELLS = {"lstm": ("OptimizedLSTMCell", "LSTMCell"), "gru": ("GRUCell",)}


def ours(cell_name, shape, engine):
    _, _, features, hidden = shape
    network = rj.stack([getattr(rj.cells, cell_name)(hidden)], engine=engine)
    params = network.init(jax.random.PRNGKey(0), features)
    return params, lambda p, x: network.apply(p, x)[1]


def flax_rnn(cell_cls_name, shape):
    import flax.linen as nn

    _, _, features, hidden = shape
    module = nn.RNN(getattr(nn, cell_cls_name)(hidden))
    xs = jnp.zeros(shape[:3])
    params = module.init(jax.random.PRNGKey(0), xs)
    return params, module.apply


def jax_steps(params, forward, xs):
    def loss(p, x):
        return jnp.mean(forward(p, x) ** 2)

    train = jax.jit(jax.grad(loss, argnums=(0, 1)))
    fwd = jax.jit(forward)
    return (
        lambda: jax.block_until_ready(train(params, xs)),
        lambda: jax.block_until_ready(fwd(params, xs)),
    )


def torch_steps(cell_name, shape, xs):
    import torch

    torch.manual_seed(0)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell_name](
        shape[2], shape[3], batch_first=True
    )
    x = torch.tensor(jax.device_get(xs), requires_grad=True)

    def train():
        module.zero_grad()
        x.grad = None
        (module(x)[0] ** 2).mean().backward()

    def forward():
        with torch.no_grad():
            module(x)

    return train, forward


def candidates(cell_name, shape, xs):
    out = {"rj auto": jax_steps(*ours(cell_name, shape, rj.Engine()), xs)}
    out["rj fused"] = jax_steps(*ours(cell_name, shape, rj.Engine(impl="fused")), xs)
    out["rj scan unhoisted"] = jax_steps(
        *ours(cell_name, shape, rj.Engine(impl="scan", hoist=False)), xs
    )
    for name in FLAX_CELLS[cell_name]:
        out[f"flax {name}"] = jax_steps(*flax_rnn(name, shape), xs)
    with contextlib.suppress(ImportError):  # torch is optional
        out["torch"] = torch_steps(cell_name, shape, xs)
    return out


def run(cells, shapes, rounds):
    rows = []
    for cell_name in cells:
        for shape in shapes:
            xs = jax.random.normal(jax.random.PRNGKey(1), shape[:3])
            fns = candidates(cell_name, shape, xs)
            train = _timing.interleaved({k: v[0] for k, v in fns.items()}, rounds)
            forward = _timing.interleaved({k: v[1] for k, v in fns.items()}, rounds)
            for name in fns:
                row = dict(cell=cell_name, shape=shape, impl=name)
                rows.append(row | dict(train_ms=train[name], forward_ms=forward[name]))
    return rows


def growth(lengths, rounds):
    """Training step and forward of ``rj auto`` and PyTorch's LSTM at each
    length T (B, I, H of ``GROWTH_SHAPE``): what a call costs beyond its
    steps shows as a ratio that falls at small T."""
    rows = []
    for steps in lengths:
        shape = (GROWTH_SHAPE[0], steps, *GROWTH_SHAPE[2:])
        xs = jax.random.normal(jax.random.PRNGKey(1), shape[:3])
        fns = {"rj auto": jax_steps(*ours("lstm", shape, rj.Engine()), xs)}
        fns["torch"] = torch_steps("lstm", shape, xs)
        train = _timing.interleaved({k: v[0] for k, v in fns.items()}, rounds)
        forward = _timing.interleaved({k: v[1] for k, v in fns.items()}, rounds)
        rows.append(dict(shape=shape, train_ms=train, forward_ms=forward))
        print(
            f"| {steps} | {train['rj auto']:.3f} | {train['torch']:.3f} | "
            f"{train['torch'] / train['rj auto']:.2f}x | {forward['rj auto']:.3f} | "
            f"{forward['torch']:.3f} | {forward['torch'] / forward['rj auto']:.2f}x |",
            flush=True,
        )
    return rows


def ratio_lines(rows):
    lines = ["| cell | shape | peer | train: peer / rj auto | forward: peer / rj auto |"]
    lines.append("|---|---|---|---|---|")
    for cell_name in dict.fromkeys(r["cell"] for r in rows):
        for shape in dict.fromkeys(r["shape"] for r in rows if r["cell"] == cell_name):
            group = [r for r in rows if r["cell"] == cell_name and r["shape"] == shape]
            mine = next(r for r in group if r["impl"] == "rj auto")
            for peer in group:
                if peer["impl"].startswith("rj"):
                    continue
                lines.append(
                    f"| {cell_name} | {','.join(map(str, shape))} | {peer['impl']} | "
                    f"{peer['train_ms'] / mine['train_ms']:.2f}x | "
                    f"{peer['forward_ms'] / mine['forward_ms']:.2f}x |"
                )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=FLAX_CELLS)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--growth", action="store_true", help="the LSTM's cost against T")
    args = parser.parse_args(argv)
    if args.growth:
        print("| T | rj train ms | torch train ms | torch / rj | rj forward ms | torch forward ms "
              "| torch / rj |\n|---|---|---|---|---|---|---|")  # fmt: skip
        lengths = [16, 64] if args.smoke else GROWTH_LENGTHS
        rows = growth(lengths, args.rounds or (2 if args.smoke else 7))
        if args.json:
            report = dict(jax=jax.__version__, date=datetime.date.today().isoformat(), rows=rows)
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        return rows
    shapes, rounds = (SMOKE_SHAPES, 2) if args.smoke else (SHAPES, 21)
    rounds = args.rounds or rounds
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, {rounds} rounds")
    rows = run(args.cells, shapes, rounds)
    _timing.print_table(
        ["cell", "shape B,T,I,H", "impl", "train ms", "forward ms"],
        [
            [r["cell"], ",".join(map(str, r["shape"])), r["impl"], f"{r['train_ms']:.3f}",
             f"{r['forward_ms']:.3f}"]
            for r in rows
        ],
    )  # fmt: skip
    print()
    print("\n".join(ratio_lines(rows)))
    if args.json:
        report = dict(jax=jax.__version__, date=datetime.date.today().isoformat(), rows=rows)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
