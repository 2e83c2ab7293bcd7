"""Training calls/s of the streamed, host-fed path (``data.stream``) against
the in-memory path on the same data: can the host keep the device busy?

    python benchmarks/stream_vs_memory.py            # 20,000 rows of (100, 16), LSTM(128)
    python benchmarks/stream_vs_memory.py --smoke    # seconds; part of the tests

The data is written as an ``arrays`` task file (.npz) and both paths train
the same ``rnn`` model on it: ``memory`` (the rows on the device, batches
drawn by key inside the compiled call) and ``stream`` (the rows on the
host, each call's batches gathered, padded and put on the device by grain,
``prefetch`` calls ahead on background threads). One call = one
``runs.Program.run_steps`` of ``steps_per_call`` steps and the host reading
its metrics, as the host loop does; the paths are interleaved per round
and the table gives medians, steps/s and stream / memory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

from recurrent_jax.data.arrays import save_arrays  # noqa: E402
from recurrent_jax.train import runs  # noqa: E402
from recurrent_jax.train.config import base_config, from_config_dict  # noqa: E402


def write_data(folder: Path, rows: int, steps: int, features: int) -> Path:
    """Random features, a class from their sign, lengths in [steps/2, steps]."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, steps, features)).astype(np.float32)
    y = (x[:, :, 0].mean(1) > 0).astype(np.int32)
    lengths = rng.integers(steps // 2, steps + 1, rows)
    return save_arrays(folder / "data.npz", x, y, lengths)


def config(path: Path, args, stream: bool):
    raw = base_config("arrays", name="bench")
    raw.data.update(path=str(path), batch_size=args.batch, eval_size=8, stream=stream)
    raw.data.update(prefetch=args.prefetch, normalize=False)
    raw.model.update(hidden_size=args.hidden)
    steps = args.steps_per_call
    raw.training.update(num_steps=steps * 1000, steps_per_call=steps, eval_every=steps)
    return from_config_dict(raw)


def call(cfg, threads: int):
    """One training call of ``cfg``'s program, state carried between calls."""
    program = runs.compile_runs(cfg)
    hparams, key = runs.stack_hparams([cfg]), runs.stack_keys([0])
    stream = program.open_stream(cfg.data, threads)
    state = [program.init(hparams, key)]

    def run():
        batches = None if stream is None else stream.next()
        state[0], metrics = program.run_steps(hparams, key, state[0], batches)
        jax.device_get(metrics)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps-per-call", type=int, default=20)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.length, args.hidden, args.batch = 200, 12, 16, 8
        args.steps_per_call, args.rounds = 4, 1
    with tempfile.TemporaryDirectory() as folder:
        path = write_data(Path(folder), args.rows, args.length, args.features)
        fns = {
            name: call(config(path, args, name == "stream"), args.threads)
            for name in ("memory", "stream")
        }
        ms = _timing.interleaved(fns, args.rounds)
    per_second = {k: 1e3 * args.steps_per_call / v for k, v in ms.items()}
    ratio = ms["memory"] / ms["stream"]
    _timing.print_table(
        ["path", "ms / call", "steps / s"],
        [[k, f"{ms[k]:.1f}", f"{per_second[k]:.1f}"] for k in ms]
        + [["stream / memory", "", f"{ratio:.2f}x"]],
    )
    results = {"ms_per_call": ms, "steps_per_second": per_second, "stream_over_memory": ratio}
    _timing.write_json(args.json, args, results)
    return results


if __name__ == "__main__":
    main()
