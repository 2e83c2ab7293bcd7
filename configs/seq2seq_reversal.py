"""recurrent-jax train --config=configs/seq2seq_reversal.py

String reversal ("abc7" -> "7cba", 1 to 10 characters of [a-z0-9]) with an
attention encoder–decoder: an LSTM encoder and decoder with multiplicative
(Luong "general") attention, Luong's attention layer and label smoothing
0.1. Without the attention layer a one-character source never ends: its
only context is the same at every step, so the readout cannot tell when to
emit EOS (88.9 % exact match: all 109 one-character sources and 2 of 101
two-character ones wrong; 100 % with it, ``experiments/README.md``). The attention maps in
``plots/attention_step_*.png`` turn into anti-diagonals as it learns.
Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("reversal", name="seq2seq_reversal")
    config.data.update(min_length=1, max_length=10, batch_size=64, eval_size=1000)
    config.model.update(
        kind="seq2seq",
        cell="lstm",
        hidden_size=128,
        embedding_size=32,
        attention="general",
        attention_layer_size=128,
        input_feeding=True,
        label_smoothing=0.1,
    )
    warmup_cosine(config, 3e-3, 100)
    config.training.update(num_steps=5000, steps_per_call=250, eval_every=1000)
    if arg == "smoke":
        config.data.update(max_length=5, batch_size=16, eval_size=32)
        config.model.update(hidden_size=16, embedding_size=8, attention_layer_size=16)
        shrink_to_smoke(config, 20)
    config.lock()
    return config
