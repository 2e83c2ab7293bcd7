"""Variable-length sequences packed into rows, trained with a GRU in Flax linen.

    python examples/packed_sequences.py           # a minute on 2 cores
    python examples/packed_sequences.py --smoke   # seconds

Each sequence (length 1 to 200, long-tailed) of noisy values is labelled
with the mean of its first feature; the model reads it whole and predicts
that mean. Batches are ``rj.pack``ed: rows hold several sequences back to
back, each starting from a fresh carry, so the step count is the total
length rather than (count × longest). ``return_sequences=False`` gives one
output per sequence.
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrent_jax as rj


class Regressor(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, packed):
        h = rj.nn.GRU(self.hidden, return_sequences=False)(packed)  # (N, hidden)
        return nn.Dense(1)(h)[:, 0]


def make_batch(rng, num, longest):
    lengths = np.clip(np.round(np.exp(rng.normal(np.log(20), 1.0, num))), 1, longest).astype(int)
    seqs = [rng.normal(size=(n, 2)).astype(np.float32) for n in lengths]
    targets = np.asarray([s[:, 0].mean() for s in seqs], np.float32)
    packed = rj.pack(seqs, row_length=longest, row_multiple=4)  # few shapes: few compiles
    return packed, jnp.asarray(targets), lengths


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    steps, num, longest = (20, 16, 50) if args.smoke else (400, 64, 200)
    rng = np.random.default_rng(0)
    model = Regressor(32)
    packed, _, _ = make_batch(rng, num, longest)
    params = model.init(jax.random.key(0), packed)
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(params)

    def loss_fn(params, packed, targets):
        return jnp.mean((model.apply(params, packed) - targets) ** 2)

    @jax.jit
    def update(params, opt_state, packed, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, packed, targets)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    slots = steps_total = 0
    for _ in range(steps):
        packed, targets, lengths = make_batch(rng, num, longest)
        params, opt_state, loss = update(params, opt_state, packed, targets)
        slots += packed.segment_ids.size
        steps_total += lengths.sum()
    padded_slots = steps * num * longest
    print(
        f"packed rows computed {slots} slots for {steps_total} steps "
        f"(padding to {longest} would compute {padded_slots})"
    )
    print(f"final loss {float(loss):.4f}; padding removed {1 - slots / padded_slots:.0%}")


if __name__ == "__main__":
    main()
