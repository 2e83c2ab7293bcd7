"""The one host loop: calls of compiled steps, evaluations, progress,
interrupts and stop signals, for a solo run and for a sweep's grid point.

``drive(runs, training, ...)`` advances a ``loop.RunLoop`` (the stacked
state of a training run's or a grid point's runs) to ``training.num_steps``:
after every call of ``steps_per_call`` steps it updates the progress bar,
evaluates every ``eval_every`` steps and at the end, and checks for a stop
request; an interrupt saves the state, so running again resumes there.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from recurrent_jax.train.progress import Progress

COMPLETED, INTERRUPTED, DIVERGED = "completed", "interrupted", "diverged"
# After a SIGTERM, the longest the process waits to reach a stop: this, or
# twice the longest time between two stops so far (a call that takes far
# longer than the others is blocked).
BLOCKED_SECONDS = 10.0
TERMINATED = 128 + signal.SIGTERM  # the exit status of a process a SIGTERM ended


def drive(
    runs, training, *, show_progress: bool, stop_requested: Callable[[int], bool]
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


def _advance(runs, t, bar: Progress, stop_requested) -> str:
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
    raises ``KeyboardInterrupt`` at once. A SIGTERM that no stop follows in
    time (``BLOCKED_SECONDS``: compiling, or a call that never returns),
    or a second SIGTERM, ends the process at once (``TERMINATED``), even
    while a call blocks it (``_Terminator``). The previous handlers come
    back on exit. Outside the main thread signals are left alone."""
    received, log = [], log or notice

    def on_interrupt(signum, frame):
        received.append(signum)
        log("interrupted: stopping after the current call (Ctrl-C again to stop at once)")
        _install(signal.SIGINT, signal.default_int_handler)

    def stop_requested(step: int) -> bool:
        stop = bool(received) or bool(should_stop and should_stop(step))
        if terminator is not None:
            terminator.reached_stop(taken=stop)
        return stop

    previous_term = _install(signal.SIGTERM, lambda signum, frame: received.append(signum))
    previous_int = _install(signal.SIGINT, on_interrupt)
    terminator = _Terminator(log) if previous_term is not None else None
    try:
        yield stop_requested
    finally:
        if terminator is not None:
            terminator.close()
        _install(signal.SIGTERM, previous_term)
        _install(signal.SIGINT, previous_int)


class _Terminator:
    """Ends the process on a second SIGTERM, or on one that no stop follows
    in time, whatever the main thread is doing: Python runs signal handlers
    only between bytecodes of the main thread, never while it waits in XLA,
    so the signals reach this thread through ``signal.set_wakeup_fd``."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.lock = log, threading.Lock()
        self.longest, self.last_stop, self.deadline = 0.0, time.monotonic(), None
        self.read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self.previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self.write_end = write_end
        self.thread = threading.Thread(target=self._watch, daemon=True, name="sigterm watch")
        self.thread.start()

    def reached_stop(self, taken: bool) -> None:
        """The main thread is at a stop (and took it, when ``taken``)."""
        with self.lock:
            now = time.monotonic()
            self.longest = max(self.longest, now - self.last_stop)
            self.last_stop = now
            if taken:  # what follows (a save, the summary) is not cut short
                self.deadline = None
                self.longest = float("inf")

    def close(self) -> None:
        signal.set_wakeup_fd(self.previous)
        os.close(self.write_end)  # the watching thread reads the end and returns
        self.thread.join()
        os.close(self.read_end)

    def _watch(self) -> None:
        terms = 0
        while True:
            with self.lock:
                deadline = self.deadline
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.read_end], [], [], wait)[0]:
                with self.lock:
                    blocked = self.deadline is not None and time.monotonic() >= self.deadline
                if blocked:
                    self._end(f"no stop within {BLOCKED_SECONDS:g}s of the SIGTERM (blocked)")
                continue
            data = os.read(self.read_end, 64)
            if not data:
                return
            if self.previous >= 0:
                with contextlib.suppress(OSError):
                    os.write(self.previous, data)
            terms += data.count(int(signal.SIGTERM))
            if terms >= 2:
                self._end("a second SIGTERM")
            if terms == 1:
                with self.lock:
                    if self.deadline is None and self.longest != float("inf"):
                        grace = max(BLOCKED_SECONDS, 2 * self.longest)
                        self.deadline = time.monotonic() + grace

    def _end(self, why: str) -> None:
        self.log(f"terminated: {why}; the checkpoints saved so far are kept")
        os._exit(TERMINATED)


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
