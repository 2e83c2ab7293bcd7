"""State-space cells on CPU: the forward pass and training step of ``s5``,
``s4d``, ``s6``, ``linoss`` and ``lru`` by each backend that runs them,
beside the same models from memorax and linax, interleaved in one process.

    python benchmarks/ssm_speed.py                   # the two shapes below
    python benchmarks/ssm_speed.py --smoke           # seconds; part of the tests
    python benchmarks/ssm_speed.py --cells s6 --shapes 8,16384,64,64 --rounds 2
    python benchmarks/ssm_speed.py --cells s4d --impls scan fft   # some of our rows only

A shape is (B, T, H, N): batch, steps, channels (input and output width H)
and the state size N of each cell (``state_size=N``; ``_ssm_peers`` says how
the peers' sizes match it). One training step = forward and backward of one
layer, loss = mean(y²), gradients w.r.t. the params and the inputs, fp32.
Every round runs each implementation in turn (one untimed call, then
``--calls`` timed ones; ``_timing.interleaved``); the tables give medians,
the ratios of the sequential scan and of the fastest peer over our default
(``impl="auto"``: > 1, we are faster), and XLA's compiled temp memory of
each program (``memory_analysis()``: what it needs beyond its inputs and
outputs). A program that would need more than ``--max-temp-gib`` is not
run (its row says so): the machine is shared.

The peers are optional: a package that does not import is left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import recurrent_jax as rj

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ssm_peers  # noqa: E402
import _timing  # noqa: E402

SHAPES = [(16, 1024, 128, 64), (8, 16384, 64, 64)]
SMOKE_SHAPES = [(2, 32, 8, 4)]
IMPLS = ("scan", "fft", "selective", "associative", "chunked", "auto")
CELLS = {  # (H, N) -> cell; s5 in one block (the initialisation only)
    "s5": lambda h, n: rj.cells.s5(h, state_size=n, blocks=1),
    "s4d": lambda h, n: rj.cells.s4d(h, state_size=n),
    "s6": lambda h, n: rj.cells.s6(h, state_size=n, gate=True),
    "linoss": lambda h, n: rj.cells.linoss(h, state_size=n),
    "lru": lambda h, n: rj.cells.lru(h, state_size=n),
}


def ours(cell_name, shape, impl):
    _, _, features, state = shape
    cell = CELLS[cell_name](features, state)
    params = cell.init(jax.random.PRNGKey(0), features)
    return params, lambda p, x: rj.unroll(cell, p, x, impl=impl)[1]


def auto_choice(cell_name, shape) -> str:
    """The backend ``impl="auto"`` picks for this cell and shape here."""
    _, steps, features, state = shape
    cell = rj.cells.base.with_defaults(CELLS[cell_name](features, state))
    params = cell.init(jax.random.PRNGKey(0), features)
    xs = jnp.zeros((steps, shape[0], features))  # time-major, as the engine sees it
    call = rj.backends.Call(cell, params, xs, rj.Engine(), frozenset())
    return rj.backends.choose(call).name


def runs(cell_name, impl) -> bool:
    """Whether our ``impl`` can run ``cell_name`` (shapes only, nothing compiled)."""
    cell = rj.cells.base.with_defaults(CELLS[cell_name](4, 4))
    call = rj.backends.Call(cell, {}, jnp.zeros((2, 1, 4)), rj.Engine(), frozenset())
    return impl == "auto" or not rj.backends.blockers(rj.backends.TABLE[impl], call)


def candidates(cell_name, shape, impls=IMPLS):
    """{row name: (params, forward)}: ours per impl of ``impls`` that runs
    the cell, then each importable peer. "auto" is left out when it picks
    one of ``IMPLS`` (the same program; ``measure`` copies that row)."""
    chosen = auto_choice(cell_name, shape)
    impls = [i for i in impls if runs(cell_name, i) and (i != "auto" or chosen not in IMPLS)]
    if chosen not in impls and "auto" not in impls:
        impls.append(chosen)  # the default's row is always measured
    out = {f"rj {impl}": ours(cell_name, shape, impl) for impl in impls}
    for name, build in _ssm_peers.PEERS[cell_name].items():
        try:
            out[name] = build(shape)
        except ImportError:
            continue
    return out, chosen


def compiled_programs(params, forward, xs):
    """``{"train": compiled, "forward": compiled}`` of one model."""

    def loss(p, x):
        return jnp.mean(forward(p, x) ** 2)

    train = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return {
        "train": train.lower(params, xs).compile(),
        "forward": jax.jit(forward).lower(params, xs).compile(),
    }


def temp_gib(compiled) -> float:
    return compiled.memory_analysis().temp_size_in_bytes / 2**30


def measure(cell_name, shape, args):
    """Rows ``{cell, shape, impl, train_ms, forward_ms, train_gib,
    forward_gib}`` of every candidate; ms is None for a program over the
    memory budget."""
    xs = jax.random.normal(jax.random.PRNGKey(1), shape[:3])
    rows, runnable = [], {"train": {}, "forward": {}}
    models, chosen = candidates(cell_name, shape, args.impls)
    for name, (params, forward) in models.items():
        row = dict(cell=cell_name, shape=shape, impl=name)
        for program, compiled in compiled_programs(params, forward, xs).items():
            row[f"{program}_gib"] = temp_gib(compiled)
            row[f"{program}_ms"] = None
            if row[f"{program}_gib"] <= args.max_temp_gib:
                call = lambda c=compiled, p=params: jax.block_until_ready(c(p, xs))  # noqa: E731
                runnable[program][name] = call
        rows.append(row)
    long = shape[1] > 4096
    rounds = args.rounds or (2 if args.smoke or long else 5)
    calls = args.calls or (1 if long else 3)
    for program, fns in runnable.items():
        if args.memory_only:
            break
        for name, ms in _timing.interleaved(fns, rounds, calls, args.warmup).items():
            next(r for r in rows if r["impl"] == name)[f"{program}_ms"] = ms
    if "rj auto" not in models:
        same = next(r for r in rows if r["impl"] == f"rj {chosen}")
        ours_rows = sum(r["impl"].startswith("rj ") for r in rows)
        rows.insert(ours_rows, same | {"impl": "rj auto"})  # after the explicit impls
    for row in rows:
        row["auto_picks"] = chosen
    return rows


def table_row(row, budget_gib):
    def ms(program):
        if row[f"{program}_ms"] is not None:
            return f"{row[f'{program}_ms']:.1f}"
        return "over budget" if row[f"{program}_gib"] > budget_gib else "not timed"

    impl = f"rj auto ({row['auto_picks']})" if row["impl"] == "rj auto" else row["impl"]
    return [row["cell"], ",".join(map(str, row["shape"])), impl, ms("train"), ms("forward"),
            f"{row['train_gib']:.2f}", f"{row['forward_gib']:.2f}"]  # fmt: skip


HEADERS = ["cell", "B,T,H,N", "impl", "train ms", "forward ms", "train temp GiB", "fwd temp GiB"]


def ratio(over, under):
    return "-" if over is None or under is None else f"{over / under:.2f}x"


def ratio_rows(rows):
    """Per cell and shape, training step and forward: the fastest peer over
    our default, and the sequential scan over the faster parallel path."""
    out = []
    for key in dict.fromkeys((r["cell"], r["shape"]) for r in rows):
        group = {r["impl"]: r for r in rows if (r["cell"], r["shape"]) == key}
        line = [key[0], ",".join(map(str, key[1]))]
        for program in ("train", "forward"):
            ms = {name: r[f"{program}_ms"] for name, r in group.items()}
            peers = [m for name, m in ms.items() if not name.startswith("rj") and m is not None]
            parallel = [ms.get(f"rj {i}") for i in ("associative", "chunked")]
            parallel = [m for m in parallel if m is not None]
            line += [
                ratio(min(peers), ms["rj auto"]) if peers else "-",
                ratio(ms.get("rj scan"), min(parallel)) if parallel else "-",
            ]
        out.append(line)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--shapes", nargs="+", default=None, help="B,T,H,N each")
    parser.add_argument(
        "--impls",
        nargs="+",
        default=list(IMPLS),
        choices=IMPLS,
        help="our rows (those that can run the cell; auto's is always in)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="5; 2 above T = 4096")
    parser.add_argument("--calls", type=int, default=None, help="timed calls a round: 3; 1")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before the rounds")
    parser.add_argument("--max-temp-gib", type=float, default=6.0)
    parser.add_argument("--memory-only", action="store_true", help="compile, report memory")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, recurrent_jax "
          f"{rj.__version__}, peers {_ssm_peers.versions()}", flush=True)  # fmt: skip
    rows = []
    for shape in shapes:
        for cell_name in args.cells:
            measured = measure(cell_name, shape, args)
            for row in measured:  # as they come: a long run cut short keeps them
                line = " | ".join(table_row(row, args.max_temp_gib))
                print(f"| {line} |", file=sys.stderr, flush=True)
            rows += measured
    _timing.print_table(HEADERS, [table_row(r, args.max_temp_gib) for r in rows])
    print()
    _timing.print_table(
        ["cell", "B,T,H,N", "train: fastest peer / auto", "train: scan / parallel",
         "forward: fastest peer / auto", "forward: scan / parallel"],
        ratio_rows(rows),
    )  # fmt: skip
    _timing.write_json(args.json, args, rows)
    return rows


if __name__ == "__main__":
    main()
