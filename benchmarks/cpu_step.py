"""CPU training step and forward: recurrent_jax's ``impl="auto"`` against
PyTorch's CPU LSTM/GRU and Flax's ``nn.RNN`` (its fastest cell), interleaved
in one process.

    python benchmarks/cpu_step.py                 # the issue's shapes, 2 cores
    python benchmarks/cpu_step.py --smoke         # seconds; part of the tests

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
    args = parser.parse_args(argv)
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
