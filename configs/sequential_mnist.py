"""recurrent-jax train --config=configs/sequential_mnist.py

Sequential MNIST (Le et al. 2015): an image read one pixel a step, 784
steps, then classified; variant ``:permuted`` reads the pixels in a fixed
random order (pMNIST), which spreads the dependencies over the whole
sequence. An LSTM of 128 units. Published: an LSTM reaches 98.2 % test
accuracy sequential and 88.0 % permuted (Arjovsky, Shah & Bengio 2016,
"Unitary Evolution Recurrent Neural Networks", their LSTM baseline).

Data: the hub's ``ylecun/mnist`` through Hugging Face ``datasets``
(``pip install 'recurrent-jax[data]'``; downloaded once); ``data.source``
takes a local copy in its format (a ``save_to_disk`` folder). Variants
``:smoke`` and ``:permuted_smoke`` run in seconds on 64 images.
"""

from recurrent_jax.train.config import base_config, shrink_to_smoke, warmup_cosine

VARIANTS = ("smoke", "permuted", "permuted_smoke")


def get_config(arg=None):
    config = base_config("mnist", name="sequential_mnist")
    config.data.update(batch_size=100, eval_size=10000, permuted=arg in VARIANTS[1:])
    config.model.update(cell="lstm", hidden_size=128)
    warmup_cosine(config, 1e-3, 500)
    config.training.update(num_steps=30000, steps_per_call=500, eval_every=5000)
    if arg in ("smoke", "permuted_smoke"):
        config.data.update(batch_size=8, eval_size=16, limit=64)
        config.model.update(hidden_size=8)
        shrink_to_smoke(config, 20)
    config.lock()
    return config
