"""recurrent-jax train --config=configs/copy.py

Copy memory: read 10 symbols (of 8), wait 20 steps, then recall them in
order (many-to-many aligned; only the recall steps are scored). Guessing
scores accuracy 1/8. Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("copy")
    config.data.update(num_symbols=8, length=10, delay=20, batch_size=64, eval_size=1000)
    config.model.update(cell="lstm", hidden_size=128)
    warmup_cosine(config, 3e-3, 100)
    config.training.update(num_steps=3000, steps_per_call=100, eval_every=500)
    if arg == "smoke":
        config.data.update(length=3, delay=2, batch_size=16, eval_size=64)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config)
    config.lock()
    return config
