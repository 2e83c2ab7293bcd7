"""Tasks and datasets: synthetic tasks generated on device from a key, and
small real datasets that ship inside PyPI packages (no downloads)."""

from recurrent_jax.data.base import (
    Batch,
    DataError,
    MissingExtraError,
    Task,
    TaskSpec,
    losses_and_metrics,
)
from recurrent_jax.data.registry import get_task, register_task, task_names, tasks

__all__ = [
    "Batch",
    "DataError",
    "MissingExtraError",
    "Task",
    "TaskSpec",
    "get_task",
    "losses_and_metrics",
    "register_task",
    "task_names",
    "tasks",
]
