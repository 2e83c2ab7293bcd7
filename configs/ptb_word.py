"""recurrent-jax train --config=configs/ptb_word.py

Word-level Penn Treebank language modelling (Mikolov's 10,000-word
version): Zaremba et al.'s small model, two LSTM layers of 200 units over
an embedding of 200, windows of 35 words, batch 20. Published: this model
unregularised reaches 114.5 test perplexity; the medium regularised one
(2 x 650, dropout) 82.7 (Zaremba, Sutskever & Vinyals 2014, "Recurrent
Neural Network Regularization", Table 1).

Data: ``ptb.{train,valid,test}.txt`` downloaded once from the authors'
repository into ``~/.cache/recurrent_jax/data/ptb``; ``data.source`` takes a
local folder of them. Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke

VARIANTS = ("smoke",)


def get_config(arg=None):
    config = base_config("ptb", name="ptb_word")
    config.data.update(tokens="words", seq_len=35, batch_size=20, eval_size=2000)
    config.model.update(cell="lstm", hidden_size=200, num_layers=2, embedding_size=200)
    config.optimizer.update(learning_rate=2e-3, clip_norm=5.0)
    config.training.update(num_steps=20000, steps_per_call=500, eval_every=2500)
    if arg == "smoke":
        config.data.update(seq_len=10, batch_size=4, eval_size=8)
        config.model.update(hidden_size=8, embedding_size=8)
        shrink_to_smoke(config, 20)
    config.lock()
    return config
