"""recurrent-jax train --config=configs/digits.py

Sequential digits: scikit-learn's bundled 8x8 digits (1797 images) read one
pixel per step (64 steps) by an LSTM, classified after the last pixel; a
fixed 80/20 train/test split. Needs scikit-learn (the ``experiments``
extra). Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("digits")
    config.data.update(test_fraction=0.2, split_seed=0, batch_size=64)
    config.model.update(cell="lstm", hidden_size=128)
    warmup_cosine(config, 3e-3, 100)
    config.training.update(num_steps=4000, steps_per_call=100, eval_every=500)
    if arg == "smoke":
        config.data.update(batch_size=16)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config)
    config.lock()
    return config
