"""64 runs of the adding problem as one compiled program: a learning-rate
sweep over 16 values × 4 seeds with ``recurrent_jax.train.runs.compile_runs``.

    python examples/sweep_64.py           # minutes on 2 cores
    python examples/sweep_64.py --smoke   # 8 runs of the smoke config, seconds
"""

import argparse

import jax
import jax.numpy as jnp

from recurrent_jax.train import config_files, core, from_config_dict
from recurrent_jax.train.runs import compile_runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    spec, rates, seeds = ("adding:smoke", 4, 2) if args.smoke else ("adding", 16, 4)
    config = from_config_dict(config_files.load_config(spec))
    base = core.default_hparams(config)
    n = rates * seeds
    scale = jnp.repeat(jnp.geomspace(0.1, 10.0, rates), seeds)
    hparams = jax.tree.map(lambda a: jnp.full((n,), a), base)
    hparams = hparams._replace(learning_rate=(base.learning_rate * scale).astype(jnp.float32))
    keys = jax.random.split(jax.random.key(0), n)
    _, metrics = compile_runs(config, n).train(hparams, keys)
    loss = metrics["eval"]["loss"].reshape(rates, seeds)
    for lr, row in zip(hparams.learning_rate[::seeds], loss, strict=True):
        mean, std = float(row.mean()), float(row.std())
        print(f"learning rate {float(lr):.2e}: test loss {mean:.5f} ± {std:.5f}")
    best = int(loss.mean(1).argmin())
    print(f"best learning rate: {float(hparams.learning_rate[best * seeds]):.2e}")
    return loss


if __name__ == "__main__":
    main()
