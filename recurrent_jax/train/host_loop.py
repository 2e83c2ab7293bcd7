"""The one host loop: calls of compiled steps, evaluations, progress,
interrupts and stop signals, for a solo run and for a sweep's grid point.

``drive(runs, training, ...)`` advances any ``Runs`` (the state of one run,
or the stacked state of a grid point's runs) to ``training.num_steps``:
after every call of ``steps_per_call`` steps it updates the progress bar,
evaluates every ``eval_every`` steps and at the end, and checks for a stop
request; an interrupt saves the state, so running again resumes there.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from recurrent_jax.train.progress import Progress

COMPLETED, INTERRUPTED, DIVERGED = "completed", "interrupted", "diverged"


class Runs(Protocol):
    """What ``drive`` advances; the device state lives in the implementation."""

    @property
    def step(self) -> int: ...

    def evaluated(self, step: int) -> bool:
        """Whether the metrics file already holds the evaluation at ``step``."""

    def run_steps(self) -> dict | None:
        """Runs one compiled call of steps and writes its metrics; returns
        what the progress bar shows, or None when the run diverged."""

    def evaluate(self) -> dict | None:
        """Evaluates, writes and checkpoints; returns what the progress bar
        shows, or None when the run diverged."""

    def save(self) -> None:
        """Checkpoints the current state (on an interrupt)."""


def drive(
    runs: Runs, training, *, show_progress: bool, stop_requested: Callable[[int], bool]
) -> tuple[str, float]:
    """Advances ``runs`` to ``training.num_steps``; returns the status
    (``COMPLETED``, ``INTERRUPTED`` or ``DIVERGED``) and the seconds spent."""
    bar = Progress(training.num_steps, runs.step, enabled=show_progress)
    start = time.perf_counter()
    try:
        status = _advance(runs, training, bar, stop_requested)
    except KeyboardInterrupt:
        runs.save()
        status = INTERRUPTED
    finally:
        bar.close()
    return status, time.perf_counter() - start


def _advance(runs: Runs, t, bar: Progress, stop_requested) -> str:
    if runs.step < t.num_steps and stop_requested(runs.step):
        return INTERRUPTED  # before the first call: nothing new to save
    if runs.step % t.eval_every == 0 and not runs.evaluated(runs.step):
        runs.evaluate()  # step 0, or an evaluation cut short by an interrupt
    while runs.step < t.num_steps:
        train = runs.run_steps()
        if train is None:
            return DIVERGED
        bar.update(runs.step, train)
        if runs.step % t.eval_every == 0 or runs.step == t.num_steps:
            evals = runs.evaluate()
            if evals is None:
                return DIVERGED
            bar.write(runs.step, train, evals)
        if runs.step < t.num_steps and stop_requested(runs.step):
            runs.save()
            return INTERRUPTED
    return COMPLETED


@contextlib.contextmanager
def stop_requests(
    should_stop: Callable[[int], bool] | None, log: Callable[[str], None] | None = None
) -> Iterator[Callable[[int], bool]]:
    """Yields ``stop_requested(step)``: true after a SIGTERM or a first
    Ctrl-C (SIGINT) caught while inside, or when ``should_stop(step)`` is.

    A stop is taken between compiled calls, where the state is whole, so an
    interrupt never lands inside a checkpoint write; a second Ctrl-C
    raises ``KeyboardInterrupt`` at once. The previous handlers come back
    on exit. Outside the main thread signals are left alone."""
    received, log = [], log or notice

    def on_interrupt(signum, frame):
        received.append(signum)
        log("interrupted: stopping after the current call (Ctrl-C again to stop at once)")
        _install(signal.SIGINT, signal.default_int_handler)

    previous_term = _install(signal.SIGTERM, lambda signum, frame: received.append(signum))
    previous_int = _install(signal.SIGINT, on_interrupt)
    try:
        yield lambda step: bool(received) or bool(should_stop and should_stop(step))
    finally:
        _install(signal.SIGTERM, previous_term)
        _install(signal.SIGINT, previous_int)


def notice(line: str) -> None:
    """A one-line notice to the user, on stderr (beside the progress bar)."""
    print(line, file=sys.stderr, flush=True)


def _install(signum, handler):
    if handler is None:
        return None
    try:
        return signal.signal(signum, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None
