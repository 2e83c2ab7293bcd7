"""recurrent-jax train --config=configs/imdb.py

IMDB sentiment (Maas et al. 2011) as Keras's ``imdb_lstm.py`` example sets
it up: the 20,000 most frequent words, reviews cut to 80, an embedding of
128, ``LSTM(128, dropout=0.2, recurrent_dropout=0.2)`` (Keras's one bias
per gate) and a readout of the two classes, batch 32. Published: a
randomly initialised LSTM reaches 86.5 % test accuracy (Dai & Le 2015,
"Semi-supervised Sequence Learning", 13.50 % test error).

Data: the hub's ``stanfordnlp/imdb`` through Hugging Face ``datasets``
(``pip install 'recurrent-jax[data]'``); ``data.dataset`` takes a local
copy (a ``save_to_disk`` folder of train and test splits with ``text`` and
``label``). Variant ``:smoke`` runs in seconds on 64 reviews.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke

VARIANTS = ("smoke",)


def get_config(arg=None):
    config = base_config("hf", name="imdb")
    config.data.update(
        dataset="stanfordnlp/imdb",
        text_column="text",
        label_column="label",
        tokens="words",
        max_vocab=20000,
        max_length=80,
        batch_size=32,
        eval_size=25000,
    )
    config.model.update(
        cell="lstm",
        hidden_size=128,
        embedding_size=128,
        bias="single",
        input_dropout=0.2,
        recurrent_dropout=0.2,
    )
    config.optimizer.update(learning_rate=1e-3)
    config.training.update(num_steps=6000, steps_per_call=250, eval_every=1500)
    if arg == "smoke":
        config.data.update(limit=64, batch_size=8, max_vocab=200)
        config.model.update(hidden_size=8, embedding_size=8)
        shrink_to_smoke(config, 20)
    config.lock()
    return config
