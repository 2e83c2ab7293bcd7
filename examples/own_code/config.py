"""recurrent-jax train --config=examples/own_code/config.py

Your own task and cell through the experiment layer: both are modules
beside this file, named by import path. Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke

VARIANTS = ("smoke",)


def get_config(arg=None):
    config = base_config("sines:make_task", name="three_sines")
    config.data.update(seq_len=50, noise=0.5, batch_size=64, eval_size=512)
    config.model.update(cell="indrnn:indrnn", hidden_size=32)
    config.training.update(num_steps=600, steps_per_call=50, eval_every=200)
    if arg == "smoke":
        config.data.update(seq_len=20)
        shrink_to_smoke(config)
    config.lock()
    return config
