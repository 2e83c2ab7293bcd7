"""recurrent-jax train --config=configs/char_lm.py

Character-level language model (LSTM) of the public-domain text shipped in
recurrent_jax/data/texts/; reports bits per character against a unigram
baseline. The default text is small (8 KB), so the model overfits after a
few hundred steps; the best checkpoint is kept. Another text:
--config.data.path=my.txt. Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("text", name="char_lm")
    config.data.update(path="", seq_len=64, valid_fraction=0.1, batch_size=32, eval_size=64)
    config.model.update(cell="lstm", hidden_size=128)
    warmup_cosine(config, 3e-3, 100, name="adamw", weight_decay=1e-2)
    config.training.update(num_steps=800, steps_per_call=100, eval_every=100)
    if arg == "smoke":
        config.data.update(seq_len=16, batch_size=8, eval_size=8)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config)
    config.lock()
    return config
