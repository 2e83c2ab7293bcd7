"""recurrent-jax train --config=configs/seed_text_classifier.py

The seed model of this project, as Keras writes it:
``Embedding(1000, 64) -> LSTM(128) -> Dense(10)`` over integer token
sequences, 164,106 parameters with Keras's one bias per gate
(``model.bias="single"``; the summary prints the count). Trained on the
``topics`` task (token sequences whose topic shows in their keywords,
generated on device). A guess scores 10 %. Variant ``:smoke`` runs in
seconds. On your own ``x`` (N, T) token ids and ``y`` (N,) classes in an
``.npz`` (docs/guides/own-data.md), the task switch brings the arrays
task's keys::

    recurrent-jax train --config=configs/seed_text_classifier.py \
        --config.data.task=arrays --config.data.path=mine.npz
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)


def get_config(arg=None):
    config = base_config("topics", name="seed_text_classifier")
    config.data.update(vocab_size=1000, num_classes=10, seq_len=80, batch_size=64, eval_size=1000)
    config.model.update(cell="lstm", hidden_size=128, embedding_size=64, bias="single")
    warmup_cosine(config, 3e-3, 100)
    config.training.update(num_steps=1500, steps_per_call=100, eval_every=500)
    if arg == "smoke":
        config.data.update(seq_len=20, batch_size=16, eval_size=64)
        shrink_to_smoke(config)
    config.lock()
    return config
