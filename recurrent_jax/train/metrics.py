"""Metrics sinks: ``metrics.jsonl`` (one object per step and split) and,
when tensorboardX is installed, TensorBoard event files."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends records to ``path`` (``metrics.jsonl``): one JSON object per
    run, step and split, ``{"run_id": i, "step": s, "split": "train",
    <metric>: value, ...}``, ``run_id`` left out for a solo run, NaN and Inf
    as null. ``tensorboard``: a directory for TensorBoard event files of a
    solo run (when tensorboardX is installed), or None."""

    def __init__(self, path: Path, *, tensorboard: Path | None = None):
        self.path = Path(path)
        self.tb = _tensorboard_writer(tensorboard) if tensorboard is not None else None

    @classmethod
    def for_run(cls, workdir: Path) -> MetricsWriter:
        """A solo run's writer: ``<workdir>/metrics.jsonl`` and TensorBoard."""
        return cls(Path(workdir) / METRICS_FILE, tensorboard=Path(workdir) / "tensorboard")

    def truncate_after(self, step: int, run_ids=None) -> None:
        """Drops the records (of ``run_ids``, default all) past ``step``,
        written after the checkpoint a resumed run restarts from, so a
        resumed run's file equals an uninterrupted one. The file is
        replaced whole (a process ended while writing leaves the old one)."""
        if not self.path.exists():
            return
        mine = lambda r: run_ids is None or r.get("run_id") in run_ids  # noqa: E731
        records = read_metrics(self.path)
        kept = [r for r in records if not mine(r) or r["step"] <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if text == self.path.read_text():
            return  # nothing past the step: the file is left as it is
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(text)
        os.replace(partial, self.path)

    def write(self, step: int, split: str, metrics: dict, run_ids=None) -> None:
        """One record per run: ``metrics`` values are (N,) arrays for the
        ``run_ids``; ``run_ids`` None: one run, whose records have no id."""
        runs = [None] if run_ids is None else list(run_ids)
        lines = []
        for i, run_id in enumerate(runs):
            record = {} if run_id is None else {"run_id": run_id}
            record |= {"step": int(step), "split": split}
            record |= {k: _number(v[i]) for k, v in metrics.items()}
            lines.append(json.dumps(record) + "\n")
        with self.path.open("a") as f:
            f.writelines(lines)
        if self.tb is not None and run_ids is None:
            for name, value in metrics.items():
                self.tb.add_scalar(f"{split}/{name}", float(value[0]), int(step))

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
