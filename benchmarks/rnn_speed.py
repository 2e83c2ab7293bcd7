"""Training-step and forward time of recurrent_jax against its peers.

    python benchmarks/rnn_speed.py            # shapes for the present device
    python benchmarks/rnn_speed.py --smoke    # seconds; part of the test suite
    python benchmarks/rnn_speed.py --cells lstm gru --json results.json

One training step = forward + backward of one layer (or of the stack, for a
shape with a fifth entry L = layers), loss = mean(y²), gradients w.r.t. the
weights and the inputs. Every implementation gets the
same inputs; time is the median of ``--repeats`` steps after warm-up, with the
device synchronised (``block_until_ready`` / ``torch.cuda.synchronize``).
Peak memory: XLA's compiled temp allocation for JAX programs (its buffer
assignment, the memory a step needs beyond inputs and outputs), and the CUDA
allocator's peak for PyTorch on GPU; "-" where not measurable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

import recurrent_jax as rj

GPU_SHAPES = [
    (32, 128, 128, 128),
    (64, 256, 512, 512),
    (128, 512, 1024, 1024),
    (16, 512, 64, 64),
    (8, 4096, 64, 64),
    (64, 100, 512, 512, 4),  # the classic cuDNN case: a 4-layer stack
]
CPU_SHAPES = [(32, 128, 128, 128), (16, 64, 64, 64)]
SMOKE_SHAPES = [(2, 8, 4, 4)]
GATES = {"lstm": 4, "gru": 3, "elman": 1}


class Result(NamedTuple):
    cell: str
    shape: tuple
    impl: str
    train_ms: float
    forward_ms: float
    memory_mb: float | None


def median_ms(fn: Callable, repeats: int, sync: Callable) -> float:
    sync(fn())  # warm-up (compile)
    sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def block(tree):
    return jax.block_until_ready(tree)


def xla_temp_mb(compiled) -> float | None:
    try:
        return compiled.memory_analysis().temp_size_in_bytes / 2**20
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def time_jax(name, cell_name, shape, forward, params, xs, repeats):
    """forward(params, xs) -> ys, timed alone and under value_and_grad."""

    def loss(p, x):
        return jnp.mean(jnp.square(forward(p, x)))

    train = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(params, xs).compile()
    fwd = jax.jit(forward).lower(params, xs).compile()
    train_ms = median_ms(lambda: train(params, xs), repeats, block)
    forward_ms = median_ms(lambda: fwd(params, xs), repeats, block)
    return Result(cell_name, shape, name, train_ms, forward_ms, xla_temp_mb(train))


# --- recurrent_jax -------------------------------------------------------


def num_layers(shape) -> int:
    return shape[4] if len(shape) > 4 else 1


def ours(cell_name, impl, unroll, dtype, hoist=True):
    def build(key, shape):
        _, _, features, hidden = shape[:4]
        kwargs = {} if dtype is None else {"dtype": dtype}
        cell = getattr(rj.cells, cell_name)(hidden, **kwargs)
        options = dict(impl=impl, unroll=unroll, hoist=hoist)
        network = rj.stack([rj.layer(cell, **options) for _ in range(num_layers(shape))])
        params = network.init(key, features)
        return params, lambda p, x: network.apply(p, x)[1]

    label = f"rj {impl} u{unroll}" + ("" if dtype is None else " bf16")
    label += "" if hoist else " unhoisted"
    return label, build


# --- peers ---------------------------------------------------------------


def flax_rnn(cell_cls_name):
    def build(key, shape):
        import flax.linen as nn

        _, _, features, hidden = shape[:4]
        layers = [nn.RNN(getattr(nn, cell_cls_name)(hidden)) for _ in range(num_layers(shape))]
        model = nn.Sequential(layers) if len(layers) > 1 else layers[0]
        params = model.init(key, jnp.zeros((1, 2, features)))
        return params, lambda p, x: model.apply(p, x)

    return f"flax {cell_cls_name}", build


def equinox_scan(cell_name):
    def build(key, shape):
        import equinox as eqx

        _, _, features, hidden = shape[:4]
        cls = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[cell_name]
        keys = jax.random.split(key, num_layers(shape))
        cells = [cls(features if i == 0 else hidden, hidden, key=k) for i, k in enumerate(keys)]
        params, static = eqx.partition(cells, eqx.is_array)

        def run_layer(c, x):
            def step(carry, x_t):
                new = jax.vmap(c)(x_t, carry)
                return new, new[0] if cell_name == "lstm" else new

            zeros = jnp.zeros((x.shape[0], hidden))
            carry = (zeros, zeros) if cell_name == "lstm" else zeros
            return jnp.swapaxes(jax.lax.scan(step, carry, jnp.swapaxes(x, 0, 1))[1], 0, 1)

        def forward(p, x):
            for c in eqx.combine(p, static):
                x = run_layer(c, x)
            return x

        return params, forward

    return f"equinox {cell_name} scan", build


def experimental_rnn(key, shape):
    """``jax.experimental.rnn.lstm`` (cuDNN through XLA), GPU only."""
    from jax.experimental import rnn

    batch, _, features, hidden = shape[:4]
    layers = num_layers(shape)
    params = rnn.init_lstm_weight(key, features, hidden, layers, False)
    zeros = jnp.zeros((layers, batch, hidden))
    lengths = jnp.full((batch,), shape[1], jnp.int32)

    def forward(w, x):
        return rnn.lstm(x, zeros, zeros, w, lengths, features, hidden, layers, 0.0, False)[0]

    return params, forward


def time_torch(cell_name, shape, repeats):
    import torch

    batch, steps, features, hidden = shape[:4]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[cell_name]
    module = cls(features, hidden, num_layers=num_layers(shape), batch_first=True).to(device)
    xs = torch.randn(batch, steps, features, device=device, requires_grad=True)

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    def train():
        module.zero_grad(set_to_none=True)
        xs.grad = None
        loss = module(xs)[0].square().mean()
        loss.backward()

    def forward():
        with torch.no_grad():
            return module(xs)[0]

    memory = None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        train()
        memory = torch.cuda.max_memory_allocated() / 2**20
    label = "torch cuDNN" if device == "cuda" else "torch CPU"
    return Result(
        cell_name,
        shape,
        label,
        median_ms(train, repeats, sync),
        median_ms(forward, repeats, sync),
        memory,
    )


def builders(cell_name, smoke, unrolls=None):
    on_gpu = jax.default_backend() == "gpu"
    unrolls = unrolls or ([1] if smoke else ([1, 8, 16] if on_gpu else [1, 8]))
    out = [ours(cell_name, "fused", u, None) for u in unrolls]
    out.append(ours(cell_name, "scan", 8 if on_gpu else 1, None))
    out.append(ours(cell_name, "scan", 1, None, hoist=False))
    if on_gpu or smoke:  # on CPU the kernel runs in interpret mode: correct, not fast
        out.append(ours(cell_name, "pallas", 1, None))
    if not on_gpu and cell_name in ("lstm", "gru"):
        out.append(ours(cell_name, "cpu", 1, None))
    if on_gpu and not smoke:
        out.append(ours(cell_name, "fused", 8, jnp.bfloat16))
        if cell_name == "lstm":
            out.append(ours(cell_name, "cudnn", 1, None))
            out.append(("jax.experimental.rnn", experimental_rnn))
    flax_cells = {"lstm": ["OptimizedLSTMCell", "LSTMCell"], "gru": ["GRUCell"], "elman": []}
    out += [flax_rnn(name) for name in flax_cells[cell_name]]
    if cell_name in ("lstm", "gru"):
        out.append(equinox_scan(cell_name))
    return out


def run(cells, shapes, repeats, smoke, *, unrolls=None, budget_s=None, json_path=None):
    """Times every builder at every shape; a row that fails (out of memory,
    a peer's limit) is reported and skipped; with ``budget_s`` no new shape
    starts after that many seconds; ``json_path`` is rewritten after each row."""
    results, start = [], time.perf_counter()
    for cell_name in cells:
        for shape in shapes:
            if budget_s is not None and time.perf_counter() - start > budget_s:
                print(f"budget of {budget_s} s spent: skipping {cell_name} {shape}", flush=True)
                continue
            key = jax.random.PRNGKey(0)
            xs = jax.random.normal(key, shape[:3])
            for label, build in builders(cell_name, smoke, unrolls):
                try:
                    params, forward = build(key, shape)
                    row = time_jax(label, cell_name, shape, forward, params, xs, repeats)
                except ImportError:
                    continue
                except Exception as error:  # noqa: BLE001 - report and go on
                    print(f"| {cell_name} | {shape} | {label} | failed: {error!r:.200} |")
                    continue
                record(results, row, json_path)
            with contextlib.suppress(ImportError):  # torch is optional
                record(results, time_torch(cell_name, shape, repeats), json_path)
    return results


def record(results, row, json_path):
    results.append(row)
    print(format_row(row), flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump([r._asdict() for r in results], f, indent=1)


def format_row(r: Result) -> str:
    memory = "-" if r.memory_mb is None else f"{r.memory_mb:.1f}"
    shape = ",".join(map(str, r.shape))
    return f"| {r.cell} | {shape} | {r.impl} | {r.train_ms:.3f} | {r.forward_ms:.3f} | {memory} |"


def auto_candidate(label: str) -> bool:
    return not any(word in label for word in ("bf16", "cudnn", "unhoisted", "pallas"))


def ratio_table(results) -> str:
    """Best recurrent_jax time vs each peer, per cell and shape (>1: we win)."""
    lines = [
        "| cell | shape | best rj (train ms) | peer | peer train ms | train ratio | fwd ratio |"
    ]
    lines.append("|---|---|---|---|---|---|---|")
    groups = {}
    for r in results:
        groups.setdefault((r.cell, r.shape), []).append(r)
    for (cell, shape), rows in groups.items():
        # ``impl="auto"`` candidates only: fp32, not the cuDNN path.
        mine = [r for r in rows if r.impl.startswith("rj ") and auto_candidate(r.impl)]
        peers = [r for r in rows if not r.impl.startswith("rj ")]
        if not mine:
            continue
        best = min(mine, key=lambda r: r.train_ms)
        best_fwd = min(r.forward_ms for r in mine)
        for peer in peers:
            lines.append(
                f"| {cell} | {','.join(map(str, shape))} | {best.impl} {best.train_ms:.3f} | "
                f"{peer.impl} | {peer.train_ms:.3f} | {peer.train_ms / best.train_ms:.2f}x | "
                f"{peer.forward_ms / best_fwd:.2f}x |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "elman"], choices=GATES)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument(
        "--shapes", nargs="+", default=None, help="B,T,I,H[,L] each (default: per device)"
    )
    parser.add_argument("--unrolls", nargs="+", type=int, default=None, help="of impl fused")
    parser.add_argument("--budget-s", type=float, default=None, help="start no shape after this")
    args = parser.parse_args(argv)
    if args.smoke:
        shapes, repeats = SMOKE_SHAPES, args.repeats or 2
    else:
        shapes = GPU_SHAPES if jax.default_backend() == "gpu" else CPU_SHAPES
        repeats = args.repeats or 30
    if args.shapes:
        shapes = [tuple(int(n) for n in text.split(",")) for text in args.shapes]
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    )
    print("| cell | shape B,T,I,H | impl | train ms | forward ms | peak MB |")
    print("|---|---|---|---|---|---|")
    results = run(
        args.cells,
        shapes,
        repeats,
        args.smoke,
        unrolls=args.unrolls,
        budget_s=args.budget_s,
        json_path=args.json,
    )
    print()
    print(ratio_table(results))
    return results


if __name__ == "__main__":
    main()
