"""``recurrent-jax decode``: decode a saved seq2seq run with any decoder.

The decoder is chosen at decode time (greedy, sampling or beam search), so
a model trained once can be compared under all of them::

    recurrent-jax decode --workdir=runs/seq2seq_addition-... --method=beam --beam-size=4
    recurrent-jax decode --workdir=DIR --method=sample --temperature=0.7 --source="123+45"
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from recurrent_jax.data.base import DataError
from recurrent_jax.data.seq2seq_tasks import Seq2SeqBatch
from recurrent_jax.seq2seq.model import DECODE_METHODS
from recurrent_jax.train import seq2seq_model
from recurrent_jax.train.config import ConfigError
from recurrent_jax.train.eval_run import restore_run
from recurrent_jax.train.runs import first
from recurrent_jax.train.seq2seq_outputs import format_samples


def source_batch(vocab, sources: list[str], max_len: int) -> Seq2SeqBatch:
    """A batch of raw source strings in the task's ``vocab`` (no targets:
    ``tgt_out`` is all PAD of width ``max_len``, which sets the decoders'
    maximum length); an unknown symbol is a one-line ``DataError``."""
    src, lengths = vocab.encode(sources, "source")
    pad = np.full((len(sources), max_len), vocab.pad_id, np.int32)
    return Seq2SeqBatch(src, lengths, pad, pad, np.ones(len(sources), np.int32))


def decode_run(
    workdir,
    *,
    run: int | None = None,
    method: str = "greedy",
    step: str | int = "best",
    sources: list[str] | None = None,
    num_samples: int = 10,
    seed: int = 0,
    trust_code: bool = False,
    **options,
) -> dict:
    """Decodes run ``run`` of ``workdir`` (``eval_run.restore_run``) on
    its held-out set (or ``sources``) with ``method``
    ("greedy", "sample" or "beam"; ``options`` as for
    ``recurrent_jax.seq2seq.decode``: ``beam_size``, ``length_penalty``,
    ``coverage_penalty``, ``temperature``, ``top_k``). Writes all lines to
    ``decoded_<method>.txt`` (run i of a sweep: ``.run-<i>.txt``) and
    returns a report with ``exact_match`` (on the held-out set) and the
    first ``num_samples`` lines."""
    if method not in DECODE_METHODS:
        raise ConfigError(f"--method: expected one of {list(DECODE_METHODS)}, got {method!r}")
    workdir = Path(workdir)
    saved = restore_run(workdir, run, step, trust_code=trust_code, command="decode")
    config = saved.config
    if config.model.KIND != "seq2seq":
        raise ConfigError(
            f"config.model.kind: expected 'seq2seq' to decode {workdir}, got {config.model.KIND!r}"
        )
    task, params = saved.program.setup.task, saved.params
    batch = jax.device_get(saved.program.eval_batch(first(saved.keys)))
    if sources:
        try:
            batch = source_batch(task.vocab, sources, batch.tgt_out.shape[1])
        except DataError as error:
            raise DataError(f"--source: {error}") from None
    if method == "beam":
        options.setdefault("beam_size", config.model.beam_size or 4)
    key = jax.random.key(seed) if method == "sample" else None
    decoded = jax.jit(
        lambda p, b: seq2seq_model.decode(config.model, task, p, b, method, key=key, **options)
    )(params, batch)
    sequences = np.asarray(decoded.sequences)
    report = {"workdir": str(workdir), "step": saved.step, "method": method, "options": options}
    if sources:
        decoded_texts = task.vocab.decode(sequences)
        lines = [f"{s} → {p}" for s, p in zip(sources, decoded_texts, strict=True)]
    else:
        lines = format_samples(task.vocab, batch.src, batch.src_lengths, sequences, batch.tgt_out)
        report["exact_match"] = float(seq2seq_model.exact_match(sequences, batch))
    name = f"decoded_{method}" + ("" if run is None else f".run-{run}")
    (workdir / f"{name}.txt").write_text("\n".join(lines) + "\n")
    report["samples"] = lines[:num_samples]
    return report


def print_report(report: dict) -> None:
    print("\n".join(report["samples"]))
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
