"""recurrent-jax train --config=configs/ptb_char.py

Character-level Penn Treebank language modelling (words joined by '_', as
char-PTB): one LSTM layer of 512 units over one-hot characters, windows of
100, batch 32, bits per character. Published: an unregularised LSTM
reaches 1.36 test bits per character (Krueger et al. 2016, "Zoneout", the
baseline of their character-level PTB table).

Data: ``ptb.{train,valid,test}.txt`` downloaded once from Zaremba et al.'s
repository into ``~/.cache/recurrent_jax/data/ptb``; ``data.source`` takes a
local folder of them. Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke

VARIANTS = ("smoke",)


def get_config(arg=None):
    config = base_config("ptb", name="ptb_char")
    config.data.update(tokens="chars", seq_len=100, batch_size=32, eval_size=2000)
    config.model.update(cell="lstm", hidden_size=512)
    config.optimizer.update(learning_rate=2e-3)
    config.training.update(num_steps=20000, steps_per_call=500, eval_every=2500)
    if arg == "smoke":
        config.data.update(seq_len=10, batch_size=4, eval_size=8)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config, 20)
    config.lock()
    return config
