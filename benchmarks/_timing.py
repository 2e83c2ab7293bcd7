"""Timing shared by the benchmarks: interleaved rounds and medians, and the
JSON record of a run."""

from __future__ import annotations

import datetime
import json
import statistics
import time

import jax


def interleaved(fns: dict, rounds: int, calls: int = 3, warmup: int = 2) -> dict:
    """Median ms of each fn over rounds in which every fn runs in turn: one
    untimed call, then ``calls`` timed ones (after ``warmup`` calls of each).

    The untimed call absorbs what the previous implementation left behind:
    PyTorch's OpenMP threads keep spinning on both cores for a while after
    each of its calls, which took up to half the cores' time from whatever
    was timed right after it, and a peer's first call after idle wakes its
    sleeping threads. Each implementation is timed in its own steady state,
    as in a training loop, while the rounds still share the machine's noise.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(ts) for name, ts in times.items()}


def write_json(path, args, results) -> None:
    """``{"date", "args", "results"}`` to ``path`` (nothing when None)."""
    if path:
        report = {"date": datetime.date.today().isoformat(), "args": vars(args), "results": results}
        with open(path, "w") as f:
            json.dump(report, f, indent=2)


def print_table(headers, rows) -> None:
    """A Markdown table of already formatted cells."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def temp_and_time(compiled, args, repeats: int):
    """(XLA's temp allocation in MiB, median ms of ``repeats`` calls after
    one untimed call, or None when ``repeats`` is 0) of a compiled program."""
    temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
    if not repeats:
        return temp_mib, None
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return temp_mib, statistics.median(times)
