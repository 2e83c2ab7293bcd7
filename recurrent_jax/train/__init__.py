"""Experiments: typed configs, the pure training function and the host loop."""

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
from recurrent_jax.train.loop import TrainingDiverged, train_and_evaluate

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "HParams",
    "TrainState",
    "default_hparams",
    "evaluate",
    "from_config_dict",
    "init_state",
    "make_train",
    "run_steps",
    "to_dict",
    "train_and_evaluate",
    "TrainingDiverged",
]
