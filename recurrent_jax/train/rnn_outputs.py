"""What an RNN run writes at its end: the task's picture of the last
evaluation (``predictions.png``: predictions against targets, a confusion
matrix, or true and predicted frames) and, for language models, sampled
text (``samples.txt``)."""

from __future__ import annotations

import jax

from recurrent_jax.data.base import SEQUENCE, TaskSpec
from recurrent_jax.train import generate, plots
from recurrent_jax.train.config import RNNModelConfig
from recurrent_jax.train.stages import RunEnd

TEMPERATURES = (0.0, 0.8, 1.0)


def write_final(model: RNNModelConfig, task: TaskSpec, end: RunEnd) -> tuple[list[str], str | None]:
    """The predictions plot (when the run did not diverge and its last
    evaluation's outputs are at hand) and the samples file (language models
    that did not diverge)."""
    written = []
    title = f"{end.title}: eval at step {end.step}"
    if not end.diverged and end.eval_outputs is not None and task.spatial_shape:
        path = plots.plot_frames(
            end.eval_outputs, end.eval_batch.targets, end.workdir / plots.TASK_FILE, title
        )
        written += [path.name] if path is not None else []
    elif not end.diverged and end.eval_outputs is not None:
        path = plots.plot_predictions(
            task.kind,
            end.eval_outputs,
            end.eval_batch.targets,
            end.eval_batch.weights,
            end.workdir / plots.TASK_FILE,
            title,
            class_names(task),
        )
        written += [path.name] if path is not None else []
    samples = None if end.diverged else write_samples(model, task, end)
    return written, samples


def class_names(task: TaskSpec) -> list[str] | None:
    """The symbols of a task that decodes ids to text (a language model)."""
    if task.decode is None:
        return None
    return [task.decode([i]) for i in range(task.output_size)]


def write_samples(model: RNNModelConfig, task: TaskSpec, end: RunEnd, length: int = 240):
    """For tasks with a ``decode`` (language models): greedy and sampled
    continuations written to ``samples.txt``; returns the file name."""
    if task.decode is None or task.output_mode != SEQUENCE:
        return None
    first_id = int(end.eval_batch.targets[0, 0])
    lines = []
    for index, temperature in enumerate(TEMPERATURES):
        ids = generate.generate(
            model,
            end.params,
            first_id,
            jax.random.fold_in(jax.random.PRNGKey(0), index),  # own draws per temperature
            length,
            task.output_size,
            temperature,
        )
        text = task.decode([first_id, *jax.device_get(ids).tolist()])
        lines.append(f"--- temperature {temperature} ---\n{text}\n")
    (end.workdir / generate.SAMPLES_FILE).write_text("\n".join(lines))
    return generate.SAMPLES_FILE
