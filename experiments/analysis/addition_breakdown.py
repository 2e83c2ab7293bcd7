"""Held-out exact match of a trained ``seq2seq_addition`` run, by operand digit counts.

    python experiments/analysis/addition_breakdown.py --workdir=runs/seq2seq_addition --size=20000

Decodes ``--size`` fresh held-out sums (``split="eval"``, a key other than
the run's evaluation set) greedily from the run's best checkpoint and prints
a Markdown table: exact match for each (digits of a, digits of b) and overall.
"""

from __future__ import annotations

import argparse
from collections import Counter

import jax
import numpy as np

from recurrent_jax.data import seq2seq_tasks
from recurrent_jax.train import seq2seq_model
from recurrent_jax.train.eval_run import restore_run


def breakdown(workdir: str, size: int, seed: int, step: str = "best") -> tuple[str, float]:
    """(Markdown table, overall exact match) of ``size`` held-out sums."""
    run = restore_run(workdir, step=step)
    config, params, chosen = run.config, run.params, run.step
    digits = config.data.options.max_digits
    batch = seq2seq_tasks.addition(jax.random.key(seed), size, max_digits=digits, split="eval")
    decoded = seq2seq_model.decode(config.model, run.program.setup.task, params, batch)
    right = exact_per_example(np.asarray(decoded.sequences), batch)
    sources = seq2seq_tasks.decode(batch.src, batch.src_lengths)
    predictions = seq2seq_tasks.decode(decoded.sequences)
    classes = [tuple(len(x) for x in s.split("+")) for s in sources]
    total, hits = Counter(classes), Counter(c for c, ok in zip(classes, right, strict=True) if ok)
    lines = [f"step {chosen}, {size} held-out sums", "", "| digits (a, b) | sums | exact match |"]
    lines.append("|---|---|---|")
    for c in sorted(total):
        lines.append(f"| {c[0]}, {c[1]} | {total[c]} | {hits[c] / total[c]:.3%} |")
    wrong = [f"{s} -> {p}" for s, p, ok in zip(sources, predictions, right, strict=True) if not ok]
    overall = right.mean()
    lines.append(f"| all | {size} | {overall:.3%} |")
    lines += ["", f"errors ({len(wrong)}): " + ", ".join(wrong[:20])]
    return "\n".join(lines), float(overall)


def exact_per_example(sequences: np.ndarray, batch) -> np.ndarray:
    """(B,) bool: the decoded row equals the target through its EOS."""
    target, lengths = np.asarray(batch.tgt_out), np.asarray(batch.tgt_lengths)
    valid = np.arange(target.shape[1])[None, :] < lengths[:, None]
    return np.all((sequences[:, : target.shape[1]] == target) | ~valid, axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--step", default="best")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f"--size: expected a positive number of sums, got {args.size}")
    print(breakdown(args.workdir, args.size, args.seed, args.step)[0])


if __name__ == "__main__":
    main()
