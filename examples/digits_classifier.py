"""Sequential 8x8 digits (scikit-learn's) with a bidirectional LSTM in Flax linen.

    python examples/digits_classifier.py           # ~97 % test accuracy, a minute on 2 cores
    python examples/digits_classifier.py --smoke   # seconds

Each image is read row by row: 8 steps of 8 pixels. The classifier reads the
LSTM's output after the whole sequence (``return_sequences=False``).
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import recurrent_jax as rj


class Classifier(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, xs, deterministic=True):
        h = rj.nn.LSTM(self.hidden, num_layers=2, bidirectional=True, dropout=0.1,
                       return_sequences=False)(xs, deterministic=deterministic)  # fmt: skip
        return nn.Dense(10)(h)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    steps, hidden = (20, 16) if args.smoke else (1500, 64)
    images, labels = load_digits(return_X_y=True)
    xs = jnp.asarray(images.reshape(-1, 8, 8) / 16.0, jnp.float32)
    ys = jnp.asarray(labels)
    order = np.random.default_rng(0).permutation(len(xs))
    train, test = order[:1400], order[1400:]

    model = Classifier(hidden)
    key = jax.random.PRNGKey(0)
    params = model.init(key, xs[:2])["params"]
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, key):
        k_batch, k_drop = jax.random.split(key)
        batch = jax.random.choice(k_batch, jnp.asarray(train), (64,))

        def loss(p):
            logits = model.apply({"params": p}, xs[batch], False, rngs={"dropout": k_drop})
            return optax.softmax_cross_entropy_with_integer_labels(logits, ys[batch]).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    for i in range(steps):
        params, opt_state, value = step(params, opt_state, jax.random.fold_in(key, i))
    logits = model.apply({"params": params}, xs[test])
    accuracy = float((logits.argmax(-1) == ys[test]).mean())
    print(f"final training loss {float(value):.4f}, test accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
