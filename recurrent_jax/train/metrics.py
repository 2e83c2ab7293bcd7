"""Metrics sinks: ``metrics.jsonl`` (one object per step and split) and,
when tensorboardX is installed, TensorBoard event files."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    def __init__(self, workdir: Path, *, tensorboard: bool = True):
        self.path = Path(workdir) / METRICS_FILE
        self.tb = _tensorboard_writer(Path(workdir) / "tensorboard") if tensorboard else None

    def truncate_after(self, step: int) -> None:
        """Drops records past ``step`` (written after the checkpoint a resumed
        run restarts from), so a resumed run's file equals an uninterrupted one."""
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, step: int, split: str, metrics: dict) -> None:
        record = {"step": int(step), "split": split}
        record |= {k: _number(v) for k, v in metrics.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for name, value in metrics.items():
                self.tb.add_scalar(f"{split}/{name}", float(value), int(step))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file ([] when absent). A last
    line cut short (a process killed while appending) is left out; a
    resumed run rewrites the file without it (``truncate_after``)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    with contextlib.suppress(json.JSONDecodeError):
        records += [json.loads(line) for line in lines[-1:]]
    return records


def has_eval(path: Path, step: int, run_ids: set | None = None) -> bool:
    """Whether the metrics file ``path`` holds an evaluation at ``step`` (of
    one of ``run_ids``, for a sweep's file)."""
    mine = lambda record: run_ids is None or record.get("run_id") in run_ids  # noqa: E731
    return any(r["step"] == step and r["split"] == "eval" and mine(r) for r in read_metrics(path))


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None  # JSON has no NaN


def _tensorboard_writer(directory: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(directory))
