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
    """The registered tasks' names, sorted."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The registered ``Task`` called ``name``."""
    if name not in _TASKS:
        raise ValueError(f"name: expected a task of {task_names()}, got {name!r}")
    return _TASKS[name]


def tasks() -> list[Task]:
    """Every registered ``Task``, by name."""
    return [_TASKS[n] for n in task_names()]
