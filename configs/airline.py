"""recurrent-jax train --config=configs/airline.py

One-step-ahead forecasts of the Airline passengers series (aeon's bundled
copy; log scale, standardised) with a GRU; the last 24 months are held out
and scored against the seasonal-naive forecast (the value 12 months
earlier). Needs aeon (the ``experiments`` extra). Variant ``:smoke`` runs
in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("forecast", name="airline")
    config.data.update(seq_len=36, test_steps=24, season=12, batch_size=32)
    config.model.update(cell="gru", hidden_size=32)
    warmup_cosine(config, 3e-3, 50)
    config.training.update(num_steps=1000, steps_per_call=100, eval_every=500)
    if arg == "smoke":
        config.model.update(hidden_size=8)
        shrink_to_smoke(config)
    config.lock()
    return config
