"""recurrent-jax train --config=configs/listops.py

ListOps as the Long Range Arena poses it (Nangia & Bowman 2018; Tay et al.
2021): the value (10 classes) of a nested MIN/MAX/MED/SUM_MOD expression
of 500 to 2,000 tokens, 96,000 training and 2,000 test expressions, from
our own generator (``recurrent_jax.data.listops``, seeded; nothing is
downloaded). Model: a bidirectional residual stack of 4 S5 layers of 128
channels over a 128-wide embedding, mean-pooled; ``--config.model.cell``
swaps in s4d, s6, linoss, lru or an LSTM. Evaluations read the first 500
test expressions (``--config.data.eval_size=2000`` for all, ~4 GiB of
activations a layer).

Published test accuracies on the LRA's own data: Transformer 36.37 % (Tay
et al. 2021, Table 1), S5 62.15 % (Smith et al. 2023, Table 1), LRU 60.2 %
(Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences"). Not yet run here (T = 2,000 over 96,000 sequences is a long
CPU run); guessing scores the majority class (the summary's baseline).
Variant ``:smoke`` runs in seconds on short expressions.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("listops")
    config.data.update(batch_size=32, eval_size=500)
    config.model.update(
        cell="s5",
        hidden_size=128,
        num_layers=4,
        bidirectional=True,
        residual=True,
        embedding_size=128,
        pooling="mean",
    )
    warmup_cosine(config, 3e-3, 1000, name="adamw", weight_decay=0.05)
    config.training.update(num_steps=50_000, steps_per_call=250, eval_every=5000)
    if arg == "smoke":
        config.data.update(
            train_size=64, test_size=32, min_length=5, max_length=40, max_depth=4, max_args=4
        )
        config.data.update(batch_size=8, eval_size=32)
        config.model.update(hidden_size=8, num_layers=1, embedding_size=8)
        shrink_to_smoke(config)
    config.lock()
    return config
