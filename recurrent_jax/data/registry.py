"""The task registry: name -> ``Task``, built-in tasks and the
researcher's own.

A config names a task by its registered name (``data.task = "adding"``) or
by import path (``data.task = "my_tasks:make_task"``: a ``Task``, or a
function of no arguments declared to return one, ``def make_task() ->
rj.data.Task``; a module beside the config file is importable). Nothing
else named is ever called (``recurrent_jax._imports.checked_function``).
``register_task`` adds one for code that builds configs in Python.
"""

from __future__ import annotations

from recurrent_jax import _imports
from recurrent_jax.data import (
    arrays,
    corpora,
    digits,
    forecast,
    listops,
    moving_digits,
    pairs,
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
        *listops.TASKS,
        *topics.TASKS,
        *digits.TASKS,
        *moving_digits.TASKS,
        *ucr.TASKS,
        *forecast.TASKS,
        *text.TASKS,
        *seq2seq_specs.TASKS,
        *arrays.TASKS,
        *pairs.TASKS,
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
    ``"module:attribute"`` naming a ``Task`` or a function of no arguments
    declared ``-> rj.data.Task``."""
    if name in _TASKS:
        return _TASKS[name]
    if not _imports.is_import_path(name):
        raise ValueError(
            f"data.task: expected a task of {task_names()} or an import path "
            f"'module:attribute', got {name!r}"
        )
    if name not in _IMPORTED:
        found = _imports.load_object(name, what="data.task")
        if not isinstance(found, Task):
            found = _imports.checked_function(
                found, name, what="data.task", returns=Task, wanted="rj.data.Task", or_value=True
            )()
        _IMPORTED[name] = found
    return _IMPORTED[name]


def tasks() -> list[Task]:
    """Every registered ``Task``, by name."""
    return [_TASKS[n] for n in task_names()]
