"""recurrent-jax train --config=configs/adding.py

The adding problem (Hochreiter & Schmidhuber 1997) at T=100 with a 1-layer
LSTM: the default experiment. Predicting the mean scores MSE 1/6 ≈ 0.167;
the LSTM should reach MSE < 0.01. Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("adding")
    config.data.update(seq_len=100, batch_size=64, eval_size=1000)
    config.model.update(cell="lstm", hidden_size=64)
    warmup_cosine(config, 1e-2, 100)
    config.training.update(num_steps=1500, steps_per_call=100, eval_every=300)
    if arg == "smoke":
        config.data.update(seq_len=10, batch_size=16, eval_size=64)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config)
    config.lock()
    return config
