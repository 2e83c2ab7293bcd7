"""recurrent-jax train --config=configs/seq2seq_addition.py

Integer addition as characters ("123+45" -> "168") with an attention
encoder–decoder: a bidirectional LSTM encoder, an LSTM decoder with additive
(Bahdanau) attention, an attention layer a_t = tanh([h_t; c_t] W_c) and
input feeding. The attention layer matters: without it the readout sees only
the context c_t, a mix of encoder outputs, and the carries that the decoder
state knows cannot reach the output (92.6 % instead of 99.85 % held out,
``experiments/README.md``). Evaluation decodes the held-out
operand pairs (1 in 20, never trained on) greedily and with beam search;
``exact_match`` is the fraction of sums exactly right. Each evaluation
writes ``samples/step_*.txt`` and ``plots/attention_step_*.png``. Variant
``:smoke`` runs in seconds. Decode a run with another decoder:
``recurrent-jax decode --workdir=DIR --method=beam --beam-size=4``.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("addition", name="seq2seq_addition")
    config.data.update(max_digits=3, batch_size=128, eval_size=2000)
    config.model.update(
        kind="seq2seq",
        cell="lstm",
        hidden_size=128,
        bidirectional_encoder=True,
        bridge="linear",
        embedding_size=32,
        attention="additive",
        attention_layer_size=128,
        input_feeding=True,
        beam_size=4,
    )
    warmup_cosine(config, 3e-3, 200)
    config.training.update(num_steps=12000, steps_per_call=250, eval_every=2000)
    if arg == "smoke":
        config.data.update(batch_size=16, eval_size=32)
        config.model.update(
            hidden_size=16, embedding_size=8, attention_layer_size=16, beam_size=None
        )
        shrink_to_smoke(config, 20)
    config.lock()
    return config
