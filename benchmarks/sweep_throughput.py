"""Sweep throughput: N runs as one vmapped program vs one run at a time.

    python benchmarks/sweep_throughput.py             # N = 1, 8, 64, 256, ... (GPU sizes)
    python benchmarks/sweep_throughput.py --max-runs 64 --steps 5 --hidden 64   # CPU
    python benchmarks/sweep_throughput.py --runs 1024 4096 --runs-per-call 256   # past memory
    python benchmarks/sweep_throughput.py --smoke     # seconds; part of the test suite

The model is the experiment of ``--config`` (default ``configs/digits.py``:
sequential 8x8 digits, one pixel per step, a 1-layer LSTM classifier, batch
64) with ``training.steps_per_call = --steps``. The runs differ in learning
rate and key. A timed chunk is ``--steps`` training steps under one
``lax.scan`` (``recurrent_jax.train.core.run_steps``):

- vmapped: ``jit(vmap(run_steps))`` over N runs, one chunk of all N runs;
  with ``--runs-per-call C`` < N, vmapped calls of C runs one after another
  inside the same program (``lax.map``, as ``recurrent-jax sweep`` does
  when the runs do not fit in memory at once);
- sequential: ``jit(run_steps)`` called for ``--sequential-runs`` runs one
  after the other (``--baseline step``: ``jit(train_step)`` called once a
  step instead, the usual Python training loop); its time per run is the same for every N (one run's
  program), so the sequential figure for N runs is N times that time
  (measured on a few runs, extrapolated).

Model-steps/s = runs x steps / seconds. Times are medians of ``--repeats``
chunks (fewer, at least 3, where they would take over 30 s) after two
warm-up chunks, each synchronised with ``jax.block_until_ready``. N grows
until ``--max-runs`` or until the device runs out of memory (reported as
"OOM"; the sweep stops there).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import statistics
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax.train import config_files, core, from_config_dict, runs

GPU_RUNS = [1, 8, 64, 256, 1024, 4096, 16384]
SMOKE_RUNS = [1, 2]
TIME_BUDGET_S = 30.0  # timed chunks of one N


class Result(NamedTuple):
    runs: int
    vmapped_ms: float | None  # one chunk of all runs; None when out of memory
    vmapped_steps_per_s: float | None
    sequential_steps_per_s: float
    ratio: float | None  # vmapped / sequential model-steps/s
    compile_s: float | None
    runs_per_call: int  # runs per vmapped call


def experiment(spec: str, steps: int, hidden: int | None, smoke: bool, impl: str = "auto"):
    config = config_files.load_config(spec)
    num_steps = -(-config.training.num_steps // steps) * steps  # the schedule's length
    overrides = [
        ("training.steps_per_call", steps),
        ("training.num_steps", num_steps),
        ("training.eval_every", num_steps),
        ("training.fast_compile", smoke),  # level 0 runs several times slower
    ]
    if hidden is not None:
        overrides.append(("model.hidden_size", hidden))
    if impl != "auto":
        overrides.append(("model.engine.impl", impl))
    return from_config_dict(
        config_files.apply_overrides(config, [(k, str(v)) for k, v in overrides])
    )


def sweep_inputs(config, n_runs: int, seed: int = 0):
    """N runs: learning rates log-spaced over 0.1x..10x the config's, own keys."""
    base = core.default_hparams(config)
    hparams = jax.tree_util.tree_map(lambda a: jnp.full((n_runs,), a), base)
    scale = jnp.geomspace(0.1, 10.0, n_runs) if n_runs > 1 else jnp.ones(1)
    hparams = hparams._replace(learning_rate=(base.learning_rate * scale).astype(jnp.float32))
    return hparams, jax.random.split(jax.random.key(seed), n_runs)


def median_s(chunk, state, repeats: int) -> tuple[float, object]:
    """Median seconds of ``state = chunk(state)`` after two warm-up chunks;
    fewer repeats (at least 3) where they would take over ``TIME_BUDGET_S``."""
    state = jax.block_until_ready(chunk(state))
    start = time.perf_counter()
    state = jax.block_until_ready(chunk(state))
    warm = time.perf_counter() - start
    times = []
    for _ in range(min(repeats, max(3, int(TIME_BUDGET_S / warm)))):
        start = time.perf_counter()
        state = jax.block_until_ready(chunk(state))
        times.append(time.perf_counter() - start)
    return statistics.median(times), state


def time_sequential(config, setup, count: int, repeats: int, per_step: bool = False) -> float:
    """Seconds per run-chunk of single runs trained one after the other: one
    dispatch a chunk, or with ``per_step`` one a training step."""
    options = core.compiler_options(config)
    init = jax.jit(functools.partial(core.init_state, setup), compiler_options=options)
    hparams, keys = sweep_inputs(config, count)
    run = [jax.tree_util.tree_map(lambda a, i=i: a[i], (hparams, keys)) for i in range(count)]
    states = [init(h, k) for h, k in run]
    if per_step:
        one = jax.jit(
            functools.partial(core.train_step, setup),
            donate_argnums=2,
            compiler_options=options,
        )
        steps = config.training.steps_per_call

        def advance(h, s, k):
            train_key = core.run_keys(k).train
            for _ in range(steps):
                s = one(h, train_key, s)[0]
            return s
    else:
        whole = jax.jit(
            functools.partial(core.run_steps, setup),
            donate_argnums=2,
            compiler_options=options,
        )
        advance = lambda h, s, k: whole(h, k, s)[0]

    def chunk(states):
        return [advance(h, s, k) for (h, k), s in zip(run, states, strict=True)]

    seconds, _ = median_s(chunk, states, repeats)
    return seconds / count


def time_vmapped(
    config, setup, n_runs: int, repeats: int, runs_per_call: int
) -> tuple[float, float]:
    """(seconds per chunk of all N runs, compile seconds), ``runs_per_call``
    runs per vmapped call."""
    hparams, keys = sweep_inputs(config, n_runs)
    options = core.compiler_options(config)
    init = jax.jit(jax.vmap(functools.partial(core.init_state, setup)), compiler_options=options)
    chunk_fn = runs.over_runs(functools.partial(core.run_steps, setup), runs_per_call, n_runs)
    step = jax.jit(chunk_fn, donate_argnums=2, compiler_options=options)
    state = init(hparams, keys)
    start = time.perf_counter()
    compiled = step.lower(hparams, keys, state).compile()
    compile_s = time.perf_counter() - start
    seconds, _ = median_s(lambda s: compiled(hparams, keys, s)[0], state, repeats)
    return seconds, compile_s


def is_out_of_memory(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def run(
    config, run_counts, repeats: int, sequential_runs: int, runs_per_call=None, per_step=False
) -> list[Result]:
    """Rows for each N; ``runs_per_call`` runs per vmapped call (None: all);
    ``per_step``: the one-run baseline dispatches every step."""
    setup = core.make_setup(config)
    steps = config.training.steps_per_call
    per_run_s = time_sequential(config, setup, sequential_runs, repeats, per_step)
    sequential = steps / per_run_s
    how = "one dispatch a step" if per_step else "one dispatch"
    print(
        f"sequential: {per_run_s * 1e3:.3f} ms per run-chunk of {steps} steps ({how})", flush=True
    )
    results = []
    for n_runs in run_counts:
        chunk = min(n_runs, runs_per_call or n_runs)
        try:
            seconds, compile_s = time_vmapped(config, setup, n_runs, repeats, chunk)
        except Exception as error:  # noqa: BLE001 - only out-of-memory is expected
            if not is_out_of_memory(error):
                raise
            results.append(Result(n_runs, None, None, sequential, None, None, chunk))
            print(format_row(results[-1]), flush=True)
            break
        vmapped = n_runs * steps / seconds
        results.append(
            Result(
                n_runs, seconds * 1e3, vmapped, sequential, vmapped / sequential, compile_s, chunk
            )
        )
        print(format_row(results[-1]), flush=True)
    return results


def format_row(r: Result) -> str:
    if r.vmapped_ms is None:
        return (
            f"| {r.runs} | {r.runs_per_call} | OOM | - | {r.sequential_steps_per_s:,.0f} | - | - |"
        )
    return (
        f"| {r.runs} | {r.runs_per_call} | {r.vmapped_ms:.2f} | {r.vmapped_steps_per_s:,.0f} | "
        f"{r.sequential_steps_per_s:,.0f} | {r.ratio:.2f}x | {r.compile_s:.1f} |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="digits", help="config name or path[:variant]")
    parser.add_argument("--hidden", type=int, default=None, help="model.hidden_size")
    parser.add_argument("--steps", type=int, default=None, help="training steps per chunk")
    parser.add_argument("--runs", type=int, nargs="+", default=None, help="values of N")
    parser.add_argument("--max-runs", type=int, default=None, help="largest N")
    parser.add_argument("--repeats", type=int, default=None, help="timed chunks")
    parser.add_argument("--sequential-runs", type=int, default=None, help="runs timed one by one")
    parser.add_argument(
        "--runs-per-call",
        "--chunk-size",
        dest="runs_per_call",
        type=int,
        default=None,
        help="runs per vmapped call (default: all N)",
    )
    parser.add_argument(
        "--baseline",
        choices=["chunk", "step"],
        default="chunk",
        help="one run at a time: a scan of --steps steps per dispatch, or one dispatch a step",
    )
    parser.add_argument("--impl", default="auto", help="model.engine.impl of every run")
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.runs_per_call is not None and args.runs_per_call < 1:
        parser.error(
            f"--runs-per-call: expected a positive number of runs, got {args.runs_per_call}"
        )
    if args.smoke:
        spec, run_counts, steps, repeats, sequential_runs = "adding:smoke", SMOKE_RUNS, 2, 1, 2
    else:
        spec, run_counts, steps, repeats, sequential_runs = args.config, GPU_RUNS, 50, 10, 4
    run_counts = args.runs or run_counts
    if args.max_runs is not None:
        run_counts = [n for n in run_counts if n <= args.max_runs]
    steps = args.steps or steps
    repeats = args.repeats or repeats
    sequential_runs = args.sequential_runs or sequential_runs
    config = experiment(spec, steps, args.hidden, args.smoke, args.impl)

    device = jax.devices()[0]
    m = config.model
    print(
        f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
        f"{spec}: {m.cell} hidden {m.hidden_size}, batch {config.data.batch_size}, "
        f"{steps} steps per chunk, impl {m.engine.impl}"
    )
    print("| N runs | runs per call | vmapped chunk ms | vmapped model-steps/s "
          "| sequential model-steps/s | ratio | compile s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    per_step = args.baseline == "step"
    results = run(config, run_counts, repeats, sequential_runs, args.runs_per_call, per_step)
    if args.json:
        report = {
            "device": device.device_kind,
            "backend": jax.default_backend(),
            "jax": jax.__version__,
            "date": datetime.date.today().isoformat(),
            "config": spec,
            "model": {
                "cell": m.cell,
                "hidden_size": m.hidden_size,
                "layers": m.num_layers,
                "impl": m.engine.impl,
            },
            "batch_size": config.data.batch_size,
            "steps_per_call": steps,
            "repeats": repeats,
            "sequential_runs": sequential_runs,
            "baseline": args.baseline,
            "results": [r._asdict() for r in results],
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return results


if __name__ == "__main__":
    main()
