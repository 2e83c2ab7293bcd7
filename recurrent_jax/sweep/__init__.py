"""Hyperparameter sweeps: many runs as one compiled program.

A sweep is a static grid (values that change shapes or structure; one
compile per grid point) times a vmapped run axis (traced scalars and seeds).
Run *i* of a sweep equals the solo run of its config (``recurrent-jax
train`` with the same values and ``training.seed``), to fp32 tolerance.

The ``sweep`` section of a config (ml_collections)::

    config.sweep = ml_collections.ConfigDict({
        # traced hyperparameters (HParams fields, or their config paths):
        "vmap": {
            "learning_rate": {"log": [1e-3, 1e-1], "num": 3},  # 1e-3, 1e-2, 1e-1
            "forget_bias": [0.0, 1.0],
        },
        # static values, by section and field: one compile per grid point
        "grid": {"model": {"hidden_size": [32, 64], "cell": ["lstm", "gru"]}},
        "seeds": 3,  # a count (training.seed, +1, +2) or a list [0, 7, 9]
        "zip": [],  # groups of axes that vary together, e.g. [["learning_rate", "clip_norm"]]
        "runs_per_call": 0,  # runs per vmapped call; 0: as many as fit in memory
    })

Axes: a list ``[a, b, c]``; ``{"log": [lo, hi], "num": n}`` (``n`` values
evenly spaced in log scale, ends included); ``{"linear": [lo, hi], "num":
n}``; ``{"range": [start, stop, step]}`` (Python ``range``, ``np.arange``
for floats). Axes are crossed (every combination); the axes of a ``zip``
group (equal lengths) take their values together. Runs are numbered in
product order: grid axes outermost, then vmapped axes, then seeds; within
``grid`` and ``vmap``, axes in key order (a ConfigDict sorts its keys).

Vmappable (``recurrent_jax.train.hparams.TABLE``): ``learning_rate``,
``weight_decay``, ``clip_norm`` (> 0), ``b1``, ``b2``, ``eps`` (Adam),
``momentum`` (SGD), ``dropout``, ``input_dropout``, ``recurrent_dropout``,
``zoneout``, ``init_scale`` (RNN models), ``forget_bias`` (LSTM),
``sampling_prob`` (seq2seq models). Naming a static
value in ``vmap`` is an error that says to put it in ``grid``.

Command line::

    recurrent-jax sweep --config=configs/adding_sweep.py[:smoke] [--workdir=DIR]
        [--config.sweep.seeds=5] [--config.sweep.vmap.zoneout="[0.0,0.1]"] [--sweep.runs_per_call=N]
    recurrent-jax sweep --workdir=DIR   # resumes the sweep saved there
        [--mesh.runs=R] [--mesh.data=D]   # devices (default: runs over all local ones)
        [--distributed]   # several processes, each training its own runs (docs/scaling.md)
"""

from recurrent_jax.sweep.compilation import CompileCounter, enable_compilation_cache
from recurrent_jax.sweep.loop import run_sweep
from recurrent_jax.sweep.report import format_sweep_summary
from recurrent_jax.train.sweep_spec import GridPoint, Run, SweepPlan, parse_axis, parse_sweep

__all__ = [
    "CompileCounter",
    "GridPoint",
    "Run",
    "SweepPlan",
    "enable_compilation_cache",
    "format_sweep_summary",
    "parse_axis",
    "parse_sweep",
    "run_sweep",
]
