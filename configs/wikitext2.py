"""recurrent-jax train --config=configs/wikitext2.py

WikiText-2 word-level language modelling (Merity et al. 2016; the
tokenised ``wikitext-2-v1``, 33,278 words): two LSTM layers of 650 units
over an embedding of 650, windows of 70 words, batch 20. Published: the
AWD-LSTM, a heavily regularised three-layer LSTM, reaches 65.8 test
perplexity (Merity, Keskar & Socher 2017, "Regularizing and Optimizing
LSTM Language Models"); unregularised LSTMs are far above it.

Data: the hub's ``Salesforce/wikitext`` (``wikitext-2-v1``) through Hugging
Face ``datasets`` (``pip install 'recurrent-jax[data]'``); ``data.dataset``
takes a local copy (a ``save_to_disk`` folder with a ``text`` column).
Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke

VARIANTS = ("smoke",)


def get_config(arg=None):
    config = base_config("hf", name="wikitext2")
    config.data.update(
        dataset="Salesforce/wikitext",
        subset="wikitext-2-v1",
        text_column="text",
        label_column="",
        tokens="words",
        max_vocab=None,
        seq_len=70,
        batch_size=20,
        eval_size=4000,
    )
    config.model.update(cell="lstm", hidden_size=650, num_layers=2, embedding_size=650)
    config.optimizer.update(learning_rate=2e-3, clip_norm=5.0)
    config.training.update(num_steps=20000, steps_per_call=500, eval_every=2500)
    if arg == "smoke":
        config.data.update(seq_len=10, batch_size=4, eval_size=8, limit=200)
        config.model.update(hidden_size=8, embedding_size=8)
        shrink_to_smoke(config, 20)
    config.lock()
    return config
