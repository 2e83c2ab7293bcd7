"""Experiments: typed configs, the pure training function, the host loop,
and a trained run as a value (``load_run``, ``fit``)."""

from recurrent_jax.train.config import ConfigError, ExperimentConfig, from_config_dict, to_dict
from recurrent_jax.train.core import (
    HParams,
    TrainState,
    default_hparams,
    evaluate,
    init_state,
    make_train,
    run_steps,
)
from recurrent_jax.train.fit import fit
from recurrent_jax.train.loaded import LoadedRun, load_run
from recurrent_jax.train.loop import TrainingDiverged, train_and_evaluate

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "HParams",
    "LoadedRun",
    "TrainState",
    "default_hparams",
    "evaluate",
    "fit",
    "from_config_dict",
    "init_state",
    "load_run",
    "make_train",
    "run_steps",
    "to_dict",
    "train_and_evaluate",
    "TrainingDiverged",
]
