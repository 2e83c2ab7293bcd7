"""Your own arrays, no code: a NumPy dataset saved as ``.npz``, one run
and a 64-run vmapped sweep of it (8 learning rates × 8 seeds, one compile),
the training rows streamed from the host (``data.stream``).

    python examples/own_data.py           # a minute on 2 cores
    python examples/own_data.py --smoke   # seconds
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from recurrent_jax.data.arrays import save_arrays
from recurrent_jax.sweep import parse_sweep, run_sweep
from recurrent_jax.train import from_config_dict
from recurrent_jax.train.config import base_config
from recurrent_jax.train.loop import train_and_evaluate


def make_data(path: Path, rows: int) -> Path:
    """Variable-length series; the class: does the series end above where it began?"""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 40, 2)).astype(np.float32).cumsum(axis=1)
    lengths = rng.integers(10, 41, rows)
    last = x[np.arange(rows), lengths - 1, 0]
    return save_arrays(path, x, (last > x[:, 0, 0]).astype(np.int32), lengths)


def config(path: Path, num_steps: int):
    raw = base_config("arrays", name="own_data")
    raw.data.update(path=str(path), batch_size=32, eval_size=256, stream=True)
    raw.model.update(cell="gru", hidden_size=32)
    raw.training.update(num_steps=num_steps, steps_per_call=50, eval_every=num_steps)
    return raw


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    rows, num_steps = (400, 50) if args.smoke else (4000, 500)
    with tempfile.TemporaryDirectory() as folder:
        raw = config(make_data(Path(folder) / "train.npz", rows), num_steps)
        one = train_and_evaluate(from_config_dict(raw), Path(folder) / "run", progress=False)
        print(f"one run: held-out accuracy {one['final_eval']['accuracy']:.3f}")
        rates = {"log": [3e-4, 3e-2], "num": 8}
        raw = raw.to_dict() | {"sweep": {"vmap": {"learning_rate": rates}, "seeds": 8}}
        summary = run_sweep(parse_sweep(raw), Path(folder) / "sweep", progress=False, log=print)
        best = summary["best"]
        print(f"{summary['counts']['completed']} runs; best learning rate "
              f"{best['learning_rate']:.2e}, accuracy {best['final_accuracy']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
