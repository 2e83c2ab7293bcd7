"""A character-level language model in Flax NNX, with sampling.

    python examples/nnx_char_lm.py           # a few minutes on 2 cores
    python examples/nnx_char_lm.py --smoke   # seconds

Trains an embedding → 2-layer LSTM → linear model on the public-domain text
the package ships, with ``nnx.Optimizer``, then samples a continuation.
"""

import argparse
from importlib.resources import files

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import recurrent_jax as rj


class CharLM(nnx.Module):
    def __init__(self, vocab, hidden, *, rngs):
        self.embed = nnx.Embed(vocab, 32, rngs=rngs)
        self.rnn = rj.nnx.LSTM(32, hidden, num_layers=2, dropout=0.1, return_carry=True,
                               rngs=rngs)  # fmt: skip
        self.out = nnx.Linear(hidden, vocab, rngs=rngs)

    def __call__(self, tokens, initial_carry=None):
        carries, ys = self.rnn(self.embed(tokens), initial_carry=initial_carry)
        return self.out(ys), carries


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    steps, hidden, seq = (10, 32, 32) if args.smoke else (2000, 256, 128)
    text = files("recurrent_jax").joinpath("data/texts/founding.txt").read_text()
    vocab = sorted(set(text))
    data = jnp.asarray([vocab.index(c) for c in text])
    model = CharLM(len(vocab), hidden, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(2e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, key):
        starts = jax.random.randint(key, (32,), 0, len(data) - seq - 1)
        windows = jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s,), (seq + 1,)))(starts)

        def loss(model):
            logits, _ = model(windows[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:]).mean()

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    key = jax.random.PRNGKey(0)
    for i in range(steps):
        value = step(model, optimizer, jax.random.fold_in(key, i))
    model.eval()
    tokens, carries = data[None, :16], None
    logits, carries = model(tokens)
    sample = []
    for i in range(40 if args.smoke else 300):
        token = jax.random.categorical(jax.random.fold_in(key, 10**6 + i), logits[:, -1] / 0.8)
        sample.append(vocab[int(token[0])])
        logits, carries = model(token[:, None], initial_carry=carries)
    print(f"final loss {float(value):.3f}; sample: {''.join(sample)!r}")
    return float(value)


if __name__ == "__main__":
    main()
