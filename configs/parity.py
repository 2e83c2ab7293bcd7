"""recurrent-jax train --config=configs/parity.py

Parity of 10 random bits with a GRU (many-to-one classification); guessing
scores accuracy 0.5. Training sequences have lengths drawn from 1 to 10
(an implicit curriculum); evaluation uses all 10 bits and reaches 100 %.
Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("parity")
    config.data.update(seq_len=10, batch_size=128, eval_size=1000)
    config.model.update(cell="gru", hidden_size=64)
    warmup_cosine(config, 3e-3, 100)
    config.training.update(num_steps=2000, steps_per_call=100, eval_every=500)
    if arg == "smoke":
        config.data.update(seq_len=4, batch_size=16, eval_size=64)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config)
    config.lock()
    return config
