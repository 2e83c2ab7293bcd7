"""The task registry: name -> ``Task``."""

from __future__ import annotations

from recurrent_jax.data import digits, forecast, moving_digits, seq2seq_specs, synthetic, text, ucr
from recurrent_jax.data.base import Task

_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        *synthetic.TASKS,
        *digits.TASKS,
        *moving_digits.TASKS,
        *ucr.TASKS,
        *forecast.TASKS,
        *text.TASKS,
        *seq2seq_specs.TASKS,
    ]
}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {task_names()}")
    return _TASKS[name]


def tasks() -> list[Task]:
    return [_TASKS[n] for n in task_names()]
