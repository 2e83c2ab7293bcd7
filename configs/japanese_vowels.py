"""recurrent-jax train --config=configs/japanese_vowels.py

JapaneseVowels (UEA, bundled with aeon): 9 speakers from 12 cepstral
coefficients, series of 7 to 29 steps fed with their lengths; 270 train /
370 test. Needs aeon (the ``experiments`` extra). Variant ``:smoke`` runs
in seconds.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke",)  # the args get_config takes ("<file>:smoke")


def get_config(arg=None):
    config = base_config("ucr", name="japanese_vowels")
    config.data.update(dataset="JapaneseVowels", batch_size=32)
    config.model.update(cell="lstm", hidden_size=64)
    warmup_cosine(config, 3e-3, 50, name="adamw", weight_decay=1e-4)
    config.training.update(num_steps=1500, steps_per_call=100, eval_every=500)
    if arg == "smoke":
        config.model.update(hidden_size=8)
        shrink_to_smoke(config)
    config.lock()
    return config
