"""recurrent-jax train --config=configs/seq2seq_dates.py

Date normalisation ("3 March 1998", "March 3, 1998", "03/03/1998", ... ->
"1998-03-03", days drawn from 1950–2049) with an attention encoder–decoder:
a bidirectional GRU encoder, a GRU decoder with additive attention, and
scheduled sampling (Bengio et al. 2015) whose probability rises to 0.25 on
an inverse-sigmoid schedule. Variant ``:smoke`` runs in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("dates", name="seq2seq_dates")
    config.data.update(first_year=1950, last_year=2049, batch_size=64, eval_size=1000)
    config.model.update(
        kind="seq2seq",
        cell="gru",
        hidden_size=128,
        bidirectional_encoder=True,
        bridge="linear",
        embedding_size=32,
        attention="additive",
        sampling_prob=0.25,
        sampling_schedule="inverse_sigmoid",
        schedule_k=500.0,
        feedback="argmax",
    )
    warmup_cosine(config, 3e-3, 100)
    config.training.update(num_steps=5000, steps_per_call=250, eval_every=1000)
    if arg == "smoke":
        config.data.update(batch_size=16, eval_size=32)
        config.model.update(hidden_size=16, embedding_size=8, schedule_k=5.0)
        shrink_to_smoke(config, 20)
    config.lock()
    return config
