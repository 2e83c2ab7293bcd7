"""The task registry: name -> ``Task``, built-in tasks and the
researcher's own.

A config names a task by its registered name (``data.task = "adding"``) or
by import path (``data.task = "my_tasks:make_task"``: a ``Task``, or a
function of no arguments returning one; a module beside the config file is
importable). ``register_task`` adds one for code that builds configs in
Python.
"""

from __future__ import annotations

import inspect

from recurrent_jax import _imports
from recurrent_jax.data import (
    arrays,
    corpora,
    digits,
    forecast,
    moving_digits,
    seq2seq_specs,
    synthetic,
    text,
    topics,
    ucr,
)
from recurrent_jax.data.base import Task

_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        *synthetic.TASKS,
        *topics.TASKS,
        *digits.TASKS,
        *moving_digits.TASKS,
        *ucr.TASKS,
        *forecast.TASKS,
        *text.TASKS,
        *seq2seq_specs.TASKS,
        *arrays.TASKS,
        *corpora.TASKS,
    ]
}
_BUILT_IN = frozenset(_TASKS)
_IMPORTED: dict[str, Task] = {}  # import path -> its task, resolved once


def task_names() -> list[str]:
    """The registered tasks' names, sorted."""
    return sorted(_TASKS)


def register_task(task: Task) -> Task:
    """Registers ``task`` under ``task.name`` (a built-in name cannot be
    taken; registering the same name again replaces the earlier task)."""
    if not isinstance(task, Task):
        raise TypeError(f"task: expected an rj.data.Task, got {task!r}")
    if task.name in _BUILT_IN:
        raise ValueError(f"task.name: expected a name of no built-in task, got {task.name!r}")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The ``Task`` called ``name``: a registered name, or an import path
    ``"module:attribute"`` naming a ``Task`` or a function returning one."""
    if name in _TASKS:
        return _TASKS[name]
    if not _imports.is_import_path(name):
        raise ValueError(
            f"data.task: expected a task of {task_names()} or an import path "
            f"'module:attribute', got {name!r}"
        )
    if name not in _IMPORTED:
        found = _imports.load_object(name, what="data.task")
        task = _call_if_factory(name, found)
        if not isinstance(task, Task):
            raise ValueError(f"data.task: expected {name!r} to give an rj.data.Task, got {task!r}")
        _IMPORTED[name] = task
    return _IMPORTED[name]


def _call_if_factory(name: str, found):
    if isinstance(found, Task) or not callable(found):
        return found
    try:
        inspect.signature(found).bind()
    except (TypeError, ValueError):
        raise ValueError(
            f"data.task: expected {name!r} to be an rj.data.Task or a function of no "
            "arguments returning one"
        ) from None
    return found()


def tasks() -> list[Task]:
    """Every registered ``Task``, by name."""
    return [_TASKS[n] for n in task_names()]
