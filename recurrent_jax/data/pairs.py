"""``data.task = "pairs"``: a researcher's own source/target pairs, for a
seq2seq model (translation-style), no code.

``data.path`` is one of:

- an ``.npz`` of int token ids: ``source`` (N, S) and ``target`` (N, L),
  optional ``source_lengths`` and ``target_lengths`` (N,) (default the
  full width); ids are the file's own, 0..V-1 on each side, and decoded
  outputs are those ids joined by spaces;
- a two-column table (``.csv`` or ``.parquet``): ``data.source_column``
  and ``data.target_column`` hold strings, read by characters;
- a text file of sources, one per line, with ``data.target_path`` the
  text file of their targets, line by line (parallel text), read by
  characters.

The vocabularies (``TaskSpec.vocab``, ``data.seq2seq_vocab``) are the
symbols of the file (characters: those of the training split, sorted),
after PAD, BOS and EOS. The held-out split is ``data.valid_fraction`` of the
rows drawn with ``data.split_seed``. Files are read as if they came from
someone else (``data.readers``: regular files only, no pickles, sizes
checked against ``data.max_gib`` before anything is allocated).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.data import readers, tables, values
from recurrent_jax.data.base import (
    DataError,
    Inputs,
    Task,
    TaskSpec,
    on_device,
    path_option,
)
from recurrent_jax.data.seq2seq_specs import SEQ2SEQ, seq2seq_spec
from recurrent_jax.data.seq2seq_tasks import Seq2SeqBatch
from recurrent_jax.data.seq2seq_vocab import FIRST, Seq2SeqVocab
from recurrent_jax.data.tables import TABLES

NPZ_KEYS = ("source", "target", "source_lengths", "target_lengths")


@dataclasses.dataclass(frozen=True)
class PairsOptions:
    """The ``data`` keys of the pairs task (see the module docstring)."""

    path: str = path_option()
    target_path: str = path_option()  # parallel text: the targets of path's lines
    valid_fraction: float = 0.2
    split_seed: int = 0
    source_column: str = "source"
    target_column: str = "target"
    max_gib: float = readers.MAX_GIB

    def __post_init__(self):
        if not 0.0 < self.valid_fraction < 1.0:
            _checks.fail("valid_fraction", "a fraction in (0, 1)", self.valid_fraction)
        _checks.check_non_negative("split_seed", self.split_seed)
        _checks.check_positive("max_gib", self.max_gib)


def read_pairs(options: PairsOptions):
    """(source rows, target rows, separator): lists of symbol lists."""
    path = Path(options.path)
    what = "config.data.path"
    if not options.path:
        raise DataError(f"{what}: expected a file of source/target pairs, got ''")
    if path.suffix == ".npz":
        return (*_npz_rows(path, what, readers.Budget(options.max_gib)), " ")
    if options.target_path and path.suffix in TABLES:
        raise DataError(f"config.data.target_path: expected '' for the table {str(path)!r}")
    if path.suffix in TABLES:
        columns = (options.source_column, options.target_column)
        return (*_table_rows(path, what, columns), "")
    if not options.target_path:
        raise DataError(
            f"config.data.target_path: expected the text file of the targets of {str(path)!r} "
            "(one a line), got ''"
        )
    sources = _lines(path, what)
    targets = _lines(Path(options.target_path), "config.data.target_path")
    if len(sources) != len(targets):
        raise DataError(
            f"config.data.target_path: expected {len(sources)} lines (those of data.path), "
            f"got {len(targets)}"
        )
    return [list(s) for s in sources], [list(t) for t in targets], ""


def _lines(path: Path, what: str) -> list[str]:
    lines = readers.read_text_file(path, what).splitlines()
    if not lines:
        raise DataError(f"{what}: the text file {str(path)!r} is empty")
    return lines


def _npz_rows(path: Path, what: str, budget: readers.Budget):
    raw = readers.read_npz(path, what, NPZ_KEYS, budget)
    missing = [k for k in ("source", "target") if k not in raw]
    if missing:
        raise DataError(
            f"{path}: expected the keys source and target (lengths optional), missing {missing}"
        )
    return _npz_rows_of(path, raw)


def _npz_rows_of(path: Path, raw: dict):
    """The checked rows of each side, symbol lists of the ids' strings."""
    rows = [_npz_side(path, raw, side) for side in ("source", "target")]
    if len(rows[0]) != len(rows[1]):
        raise DataError(
            f"{path}: target: expected {len(rows[0])} rows (those of source), got {len(rows[1])}"
        )
    return rows


def _npz_side(path: Path, raw: dict, side: str) -> list[list[str]]:
    """The rows of ``raw[side]`` cut to ``raw[side + "_lengths"]``, checked."""
    ids = raw[side]
    if ids.ndim != 2 or 0 in ids.shape:
        got = f"{ids.dtype}{list(ids.shape)}"
        raise DataError(f"{path}: {side}: expected int token ids (N, width), got {got}")
    lengths = raw.get(f"{side}_lengths", np.full(len(ids), ids.shape[1]))
    if lengths.shape != (len(ids),) or not np.issubdtype(lengths.dtype, np.integer):
        got = f"{lengths.dtype}{list(lengths.shape)}"
        raise DataError(f"{path}: {side}_lengths: expected ints ({len(ids)},), got {got}")
    if lengths.min() < 0 or lengths.max() > ids.shape[1]:
        raise DataError(f"{path}: {side}_lengths: expected values in [0, {ids.shape[1]}]")
    valid = np.arange(ids.shape[1])[None] < lengths[:, None]
    ids = values.as_int32_ids(f"{path}: {side}", ids, "token ids", ("row", "step"), valid)
    return [[str(t) for t in r[:n]] for r, n in zip(ids.tolist(), lengths.tolist(), strict=True)]


def _table_rows(path: Path, what: str, columns: tuple):
    _, table = tables.read(path, what, text_columns=columns)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: expected the columns {missing} (data.*_column), got {table.column_names}"
        )
    return [[list(t) for t in _texts(path, table, column)] for column in columns]


def _texts(path: Path, table, column: str) -> list[str]:
    texts = table.column(column).to_pylist()
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(
            f"{path}: {column}: expected text in every row, got {texts[bad]!r:.40} at row {bad}"
        )
    return texts


def vocab_of(sources, targets, separator: str) -> Seq2SeqVocab:
    """Each side's symbols: ids 0..V-1 in order (an ``.npz``), or the
    sorted characters of the rows."""
    if separator:
        size = lambda rows: 1 + max((int(s) for r in rows for s in r), default=0)  # noqa: E731
        return Seq2SeqVocab(
            tuple(map(str, range(size(sources)))), tuple(map(str, range(size(targets)))), " "
        )
    chars = lambda rows: tuple(sorted({c for r in rows for c in r}))  # noqa: E731
    return Seq2SeqVocab(chars(sources), chars(targets))


def pad_pairs(vocab: Seq2SeqVocab, sources, targets, max_gib: float) -> Seq2SeqBatch:
    """The rows as a ``Seq2SeqBatch`` of NumPy arrays (BOS + target in,
    target + EOS out), their padded size checked against ``max_gib`` first."""
    width = max(len(r) for r in sources)
    out_width = 1 + max(len(r) for r in targets)
    readers.Budget(max_gib).take(
        "config.data.path", (len(sources), width + 2 * out_width), np.dtype(np.int32),
        4 * len(sources) * (width + 2 * out_width),
    )  # fmt: skip
    if min(len(r) for r in sources) == 0:
        row = next(i for i, r in enumerate(sources) if not r)
        raise DataError(f"config.data.path: source {row}: expected at least one symbol, got none")
    src_index = {s: FIRST + i for i, s in enumerate(vocab.source)}
    tgt_index = {s: FIRST + i for i, s in enumerate(vocab.target)}
    n = len(sources)
    src = np.full((n, width), vocab.pad_id, np.int32)
    tgt_in = np.full((n, out_width), vocab.pad_id, np.int32)
    tgt_out = np.full((n, out_width), vocab.pad_id, np.int32)
    for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
        src[i, : len(s)] = [src_index[c] for c in s]
        ids = [tgt_index[c] for c in t]
        tgt_in[i, : len(t) + 1] = [vocab.bos_id, *ids]
        tgt_out[i, : len(t) + 1] = [*ids, vocab.eos_id]
    src_lengths = np.array([len(r) for r in sources], np.int32)
    tgt_lengths = np.array([len(r) + 1 for r in targets], np.int32)
    return Seq2SeqBatch(src, src_lengths, tgt_in, tgt_out, tgt_lengths)


@functools.cache
def load_pairs(options: PairsOptions):
    """(train ``Seq2SeqBatch``, held-out one, vocabulary) of the files."""
    sources, targets, separator = read_pairs(options)
    n = len(sources)
    num_eval = max(1, round(n * options.valid_fraction))
    if n - num_eval < 1:
        raise DataError(f"config.data.path: expected at least 2 pairs to split, got {n}")
    order = np.random.default_rng(options.split_seed).permutation(n)
    train_rows, eval_rows = order[num_eval:], order[:num_eval]
    train_src, train_tgt = [sources[i] for i in train_rows], [targets[i] for i in train_rows]
    known = (sources, targets) if separator else (train_src, train_tgt)  # ids: the file's own
    vocab = vocab_of(*known, separator)
    held_out_src, held_out_tgt = [sources[i] for i in eval_rows], [targets[i] for i in eval_rows]
    sides = (("source", held_out_src, vocab.source), ("target", held_out_tgt, vocab.target))
    for side, rows, symbols in sides:
        unseen = sorted({c for r in rows for c in r} - set(symbols))
        if unseen:
            raise DataError(
                f"config.data.path: the held-out {side}s hold symbols {unseen[:5]} that no "
                "training pair has; give more pairs or another data.split_seed"
            )
    everything = pad_pairs(vocab, sources, targets, options.max_gib)
    take = lambda rows: Seq2SeqBatch(*(a[rows] for a in everything))  # noqa: E731
    return take(np.sort(train_rows)), take(np.sort(eval_rows)), vocab


def read_sources(options: PairsOptions, vocab: Seq2SeqVocab, path) -> tuple[list[str]]:
    """``Inputs.read`` of the pairs task: the sources of a file to decode
    (``predict --input``), as strings of ``vocab``: an ``.npz``'s
    ``source`` ids (with ``source_lengths``), a table's source column, or
    a text file's lines."""
    path, what = Path(path), "--input"
    if path.suffix == ".npz":
        raw = readers.read_npz(path, what, NPZ_KEYS[::2], readers.Budget(options.max_gib))
        if "source" not in raw:
            raise DataError(f"{path}: expected the key source (source_lengths optional)")
        rows = _npz_side(path, raw, "source")
    elif path.suffix in TABLES:
        column = options.source_column
        _, table = tables.read(path, what, text_columns=(column,))
        if column not in table.column_names:
            raise DataError(f"{path}: expected the column {column!r} (data.source_column)")
        rows = [list(t) for t in _texts(path, table, column)]
    else:
        rows = [list(line) for line in _lines(path, what)]
    joined = [vocab.separator.join(r) for r in rows]
    return (joined,)


def build_pairs(options: PairsOptions) -> TaskSpec:
    train, held_out, vocab = load_pairs(options)

    def sample_train(key, batch_size):
        rows = jax.random.randint(key, (batch_size,), 0, train.src.shape[0])
        return Seq2SeqBatch(*(a[rows] for a in on_device(train)))

    def eval_set(key, size):
        return Seq2SeqBatch(*(jnp.asarray(a) for a in on_device(held_out)))

    info = {
        "pairs": f"{len(train.src)} training, {len(held_out.src)} held out",
        "vocabulary": f"{len(vocab.source)} source and {len(vocab.target)} target symbols",
    }
    return seq2seq_spec(
        sample_train,
        eval_set,
        max_len=int(train.tgt_out.shape[1]),
        info=info,
        vocab=vocab,
        inputs=Inputs(read=functools.partial(read_sources, options, vocab)),
    )


TASKS = [
    Task(
        "pairs",
        "your own source/target pairs: .npz ids, a two-column table or parallel text files",
        "seq2seq",
        PairsOptions,
        build_pairs,
        model_kind=SEQ2SEQ,
    )
]
