"""The benchmark configs people cite (sequential/permuted MNIST, IMDB,
Penn Treebank by words and characters, WikiText-2) run their real loading
code, here on small fixtures in the same formats that the tests write: a
Hugging Face ``save_to_disk`` folder, or the PTB text files. Nothing is
downloaded. Also: text classification from class folders, and word-level
language modelling of a text file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _helpers import DOWNLOADED_CONFIGS

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")
datasets = pytest.importorskip("datasets")

import recurrent_jax as rj  # noqa: E402
from recurrent_jax import cli  # noqa: E402
from recurrent_jax.data import corpora, text  # noqa: E402

pytestmark = pytest.mark.slow

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "log", "red", "big"]


def sentences(rng, count):
    return [" ".join(rng.choice(WORDS, rng.integers(3, 9))) for _ in range(count)]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Folders in each benchmark's own format."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("fixtures")

    def images(n):
        labels = rng.integers(0, 10, n)
        pictures = [Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)) for _ in labels]
        data = datasets.Dataset.from_dict({"image": pictures, "label": labels.tolist()})
        return data.cast_column("image", datasets.Image())

    datasets.DatasetDict({"train": images(64), "test": images(16)}).save_to_disk(root / "mnist")

    def reviews(n):
        labels = rng.integers(0, 2, n)
        texts = [" ".join(["good" if y else "bad", *sentences(rng, 3)]) for y in labels]
        return datasets.Dataset.from_dict({"text": texts, "label": labels.tolist()})

    datasets.DatasetDict({"train": reviews(64), "test": reviews(16)}).save_to_disk(root / "imdb")
    lines = lambda n: datasets.Dataset.from_dict({"text": sentences(rng, n)})  # noqa: E731
    splits = {"train": lines(300), "validation": lines(60), "test": lines(60)}
    datasets.DatasetDict(splits).save_to_disk(root / "wikitext")
    (root / "ptb").mkdir()
    for split, n in (("train", 400), ("valid", 80), ("test", 80)):
        body = "\n".join(" " + s + " " for s in sentences(rng, n))
        (root / "ptb" / f"ptb.{split}.txt").write_text(body)
    return root


ON_FIXTURES = [
    ("sequential_mnist:smoke", "data.source=mnist"),
    ("sequential_mnist:permuted_smoke", "data.source=mnist"),
    ("imdb:smoke", "data.dataset=imdb"),
    ("ptb_word:smoke", "data.source=ptb"),
    ("ptb_char:smoke", "data.source=ptb"),
    ("wikitext2:smoke", "data.dataset=wikitext"),
]


def test_every_downloaded_config_runs_here():
    """test_train leaves these configs out; here each runs on its fixture."""
    assert {spec.split(":")[0] for spec, _ in ON_FIXTURES} == DOWNLOADED_CONFIGS


@pytest.mark.parametrize("spec, source", ON_FIXTURES)
def test_benchmark_config_trains_on_its_fixture(spec, source, fixtures, tmp_path, capsys):
    key, folder = source.split("=")
    workdir = tmp_path / "run"
    argv = ["train", f"--config={spec}", f"--config.{key}={fixtures / folder}", "--no-progress"]
    assert cli.main([*argv, f"--workdir={workdir}"]) == 0, capsys.readouterr().err
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_eval"] is not None
    metric = summary["primary_metric"]
    assert metric == {"sequential_mnist": "accuracy", "imdb": "accuracy"}.get(
        summary["name"], "bits_per_char" if "char" in spec else "perplexity"
    )


def test_permuted_mnist_is_the_pixels_in_one_fixed_order(fixtures):
    straight = rj.data.get_task("mnist").build(corpora.MNISTOptions(source=str(fixtures / "mnist")))
    permuted = rj.data.get_task("mnist").build(
        corpora.MNISTOptions(source=str(fixtures / "mnist"), permuted=True)
    )
    a, b = straight.eval_set(None, 0), permuted.eval_set(None, 0)
    order = np.random.default_rng(0).permutation(784)
    np.testing.assert_array_equal(np.asarray(b.xs), np.asarray(a.xs)[:, order])
    assert a.xs.shape == (16, 784, 1) and float(a.xs.max()) <= 1.0


def test_text_classification_from_class_folders(tmp_path):
    for word in ["neg", "pos"]:
        folder = tmp_path / "train" / word
        folder.mkdir(parents=True)
        for i in range(10):
            (folder / f"{i}.txt").write_text(f"{word} review number {i} " + word * (i % 3))
    spec = rj.data.get_task("text_classes").build(
        corpora.TextClassesOptions(path=str(tmp_path / "train"), max_length=5, valid_fraction=0.2)
    )
    assert spec.input_vocab is not None and spec.output_size == 2
    assert spec.info["classes"] == ["neg", "pos"] and spec.info["train_rows"] == 16
    batch = spec.eval_set(None, 0)
    assert batch.xs.shape[1] <= 5 and int(batch.seq_lengths.max()) <= 5
    assert spec.decode is None  # a classifier is not sampled from
    train = spec.sample_train(__import__("jax").random.key(0), 64)
    firsts = {}  # each text starts with its class's word: one first id per class
    for b in (batch, train):
        for first, label in zip(
            np.asarray(b.xs)[:, 0].tolist(), np.asarray(b.targets).tolist(), strict=True
        ):
            assert firsts.setdefault(label, first) == first
    assert sorted(firsts) == [0, 1] and firsts[0] != firsts[1]


def test_word_language_model_of_a_text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(sentences(np.random.default_rng(1), 200)))
    options = text.TextOptions(path=str(path), tokens="words", seq_len=8, max_vocab=10)
    spec = rj.data.get_task("text").build(options)
    assert spec.input_vocab == 10 and spec.primary_metric == "perplexity"
    batch = spec.sample_train(__import__("jax").random.key(0), 3)
    np.testing.assert_array_equal(np.asarray(batch.xs)[:, 1:], np.asarray(batch.targets)[:, :-1])
