"""recurrent-jax sweep --config=configs/adding_sweep.py

The adding problem (T=100, LSTM 64, as configs/adding.py) over learning
rate (3e-3, 1e-2, 3e-2) × forget-gate bias (0 and 1, Jozefowicz et al.
2015) × 3 seeds: 18 runs, all vmapped in one compiled program (split over
the local devices; ``--mesh.runs``, ``--distributed``: docs/scaling.md).
``recurrent-jax train --config=configs/adding_sweep.py`` runs the base
config alone. Variant ``:smoke`` (2 × 2 × 2 runs) runs in seconds.
"""

import ml_collections

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("adding", name="adding_sweep")
    config.data.update(seq_len=100, batch_size=64, eval_size=1000)
    config.model.update(cell="lstm", hidden_size=64)
    warmup_cosine(config, 1e-2, 100)
    config.training.update(num_steps=1500, steps_per_call=100, eval_every=300)
    learning_rates, seeds = {"log": [3e-3, 3e-2], "num": 3}, 3
    if arg == "smoke":
        config.data.update(seq_len=10, batch_size=16, eval_size=64)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config)
        learning_rates, seeds = [3e-3, 3e-2], 2
    config.sweep = ml_collections.ConfigDict(
        {
            "vmap": {"learning_rate": learning_rates, "forget_bias": [0.0, 1.0]},
            "grid": {},
            "seeds": seeds,
            "zip": [],
            "runs_per_call": 0,
        }
    )
    config.lock()
    return config
