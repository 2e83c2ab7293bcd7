"""Seq2seq on a researcher's own pairs (``data.task="pairs"``): an .npz of
ids, a two-column table and parallel text files read into the same rows;
the vocabularies are the task's; a run from one's own files trains,
decodes and predicts (CLI and ``load_run``), its outputs in the task's
vocabulary; bad files and unknown symbols are one-line errors."""

from __future__ import annotations

import json
import textwrap

import jax
import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

import recurrent_jax.data as rj_data  # noqa: E402
from recurrent_jax import cli  # noqa: E402
from recurrent_jax.data import pairs  # noqa: E402
from recurrent_jax.data.base import DataError  # noqa: E402
from recurrent_jax.train import core, from_config_dict, load_run  # noqa: E402
from recurrent_jax.train.config import base_config  # noqa: E402

CONFIG = """
from recurrent_jax.train.config import base_config, shrink_to_smoke

def get_config(arg=None):
    config = base_config("pairs", name="reverse")
    config.data.update(path="words.txt", target_path="reversed.txt", batch_size=16)
    config.model.update(hidden_size=16, embedding_size=8)
    shrink_to_smoke(config, num_steps=20)
    config.lock()
    return config
"""


def reversal_pairs(n=48, seed=0):
    """Short strings over "abcde" and their reversals, upper case and
    ending in "." (the oracle): the two sides have their own symbols."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcde"), rng.integers(1, 5))) for _ in range(n)]
    return words, [w[::-1].upper() + "." for w in words]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    words, reversed_words = reversal_pairs()
    (folder / "words.txt").write_text("\n".join(words) + "\n")
    (folder / "reversed.txt").write_text("\n".join(reversed_words) + "\n")
    (folder / "config.py").write_text(textwrap.dedent(CONFIG))
    return folder


@pytest.fixture(scope="module")
def trained(project):
    workdir = project / "run"
    assert cli.main(["train", f"--config={project / 'config.py'}", f"--workdir={workdir}",
                     "--no-progress"]) == 0  # fmt: skip
    return workdir


def _rows(options):
    """Every pair of a task's two splits, decoded back to strings."""
    train, held_out, vocab = pairs.load_pairs(options)
    out = set()
    for split in (train, held_out):
        sources = vocab.decode(split.src, split.src_lengths, side="source")
        targets = vocab.decode(split.tgt_out)
        out |= set(zip(sources, targets, strict=True))
    return out, vocab


def test_npz_table_and_parallel_text_give_the_same_pairs(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow as pd
    import pyarrow.csv  # noqa: F401

    words, reversed_words = reversal_pairs(20, seed=1)
    (tmp_path / "src.txt").write_text("\n".join(words))
    (tmp_path / "tgt.txt").write_text("\n".join(reversed_words))
    text, vocab = _rows(pairs.PairsOptions(str(tmp_path / "src.txt"), str(tmp_path / "tgt.txt")))
    assert text == set(zip(words, reversed_words, strict=True))
    assert set(vocab.source) <= set("abcde") and vocab.pad_id == 0 and vocab.eos_id == 2
    table = pd.table({"source": words, "target": reversed_words})
    pd.csv.write_csv(table, tmp_path / "pairs.csv")
    assert _rows(pairs.PairsOptions(str(tmp_path / "pairs.csv")))[0] == text
    # token ids: the file's own, decoded as ids joined by spaces
    ids = {c: i for i, c in enumerate("abcde")}
    width = max(map(len, words))
    source = np.zeros((20, width), np.int64)
    for i, w in enumerate(words):
        source[i, : len(w)] = [ids[c] for c in w]
    target = np.array([r[::-1] for r in source])  # not the reversal of the valid part
    lengths = np.array([len(w) for w in words])
    np.savez(tmp_path / "ids.npz", source=source, target=target, source_lengths=lengths)
    got, vocab = _rows(pairs.PairsOptions(str(tmp_path / "ids.npz")))
    want = {
        (" ".join(map(str, s[:n])), " ".join(map(str, t)))
        for s, t, n in zip(source, target, lengths, strict=True)
    }
    assert got == want and vocab.separator == " "


def test_digits_in_a_csv_stay_text(tmp_path):
    rows = ["007,700", "070,070", "700,007", "0707,7070", "77,77"]
    (tmp_path / "p.csv").write_text("source,target\n" + "\n".join(rows) + "\n")
    got, vocab = _rows(pairs.PairsOptions(str(tmp_path / "p.csv"), valid_fraction=0.2))
    assert got == {tuple(r.split(",")) for r in rows} and vocab.source == ("0", "7")


def test_the_config_is_a_seq2seq_model_with_the_tasks_vocabulary(project, monkeypatch):
    monkeypatch.chdir(project)
    raw = base_config("pairs")
    assert raw.model.kind == "seq2seq"  # the task's typed model_kind, not its free text
    raw.data.update(path="words.txt", target_path="reversed.txt")
    setup = core.make_setup(from_config_dict(raw))
    params = setup.model.init(core.default_hparams(from_config_dict(raw)), jax.random.key(0))
    vocab = setup.task.vocab
    assert vocab.source == tuple("abcde") and vocab.target == tuple(".ABCDE")
    assert params["src_embedding"].shape == (3 + 5, 32)  # PAD, BOS, EOS, then the symbols
    assert params["tgt_embedding"].shape == (3 + 6, 32)
    assert params["output"]["w"].shape == (128, 3 + 6)


def test_a_run_on_own_pairs_trains_decodes_and_predicts(trained, tmp_path, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["status"] == "completed"
    vocab = set(".ABCDE")  # the targets' symbols
    capsys.readouterr()
    assert cli.main(["decode", f"--workdir={trained}", "--source=abc", "--source=ed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    decoded = [line.split(" → ")[1] for line in lines[:2]]
    assert lines[0].startswith("abc → ") and all(set(d) <= vocab for d in decoded)
    assert cli.main(["decode", f"--workdir={trained}"]) == 0  # the held-out pairs
    held_out = (trained / "decoded_greedy.txt").read_text().splitlines()
    assert held_out and all(" → " in line and " | " in line for line in held_out)
    run = load_run(trained)
    predicted = run.predict(["abc", "ed"])
    assert list(predicted["text"]) == decoded  # the same decoder, the same params
    assert all(set(t) <= vocab for t in predicted["text"])
    out = tmp_path / "preds.csv"
    argv = ["predict", f"--workdir={trained}", "--source=abc", "--source=ed", f"--output={out}"]
    assert cli.main(argv) == 0
    assert out.read_text().splitlines()[0].startswith("row,")
    assert decoded[0] in out.read_text()
    # a file of sources, one a line, read by the task's reader; beam search as decode's
    (tmp_path / "new.txt").write_text("abc\ned\n")
    argv = ["predict", f"--workdir={trained}", f"--input={tmp_path / 'new.txt'}"]
    assert (
        cli.main([*argv, "--method=beam", "--beam-size=3", f"--output={tmp_path / 'b.npz'}"]) == 0
    )
    beam = np.load(tmp_path / "b.npz")
    assert list(beam["source"]) == ["abc", "ed"]
    want = run.predict(["abc", "ed"], method="beam", beam_size=3)
    np.testing.assert_array_equal(beam["sequences"], want["sequences"])
    assert list(beam["text"]) == list(want["text"])


def test_each_door_decodes_a_pairs_run_as_it_does(trained):
    pytest.importorskip("equinox")
    run = load_run(trained)
    vocab, sources = run.task.vocab, ["abc", "ed", "b"]
    src, src_lengths = vocab.encode(sources)
    ids = dict(bos_id=vocab.bos_id, eos_id=vocab.eos_id, max_len=run.task.info["max_len"])
    want = run.predict(sources)["sequences"]
    for door in ("as_nn", "as_eqx"):  # the source and target vocabularies' sizes differ
        decoded = getattr(run, door)().decode(src, src_lengths, **ids)
        np.testing.assert_array_equal(decoded.sequences, want)


def test_unknown_symbols_and_bad_pair_files_are_one_line_errors(trained, tmp_path, capsys):
    run = load_run(trained)
    with pytest.raises(
        DataError, match=r"xs: source 1: symbols \['z'\] are not in the task's source"
    ):
        run.predict(["abc", "az"])
    assert cli.main(["decode", f"--workdir={trained}", "--source=xyz"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("recurrent-jax: error: --source: source 0: symbols ['x', 'y', 'z']")
    assert "\n" not in err
    (tmp_path / "a.txt").write_text("ab\ncd\n")
    (tmp_path / "b.txt").write_text("ba\n")
    with pytest.raises(DataError, match="config.data.target_path: expected 2 lines"):
        pairs.read_pairs(pairs.PairsOptions(str(tmp_path / "a.txt"), str(tmp_path / "b.txt")))
    with pytest.raises(DataError, match="config.data.target_path: expected the text file"):
        pairs.read_pairs(pairs.PairsOptions(str(tmp_path / "a.txt")))
    np.save(tmp_path / "obj.npy", np.array([[1], [1, 2]], dtype=object), allow_pickle=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as z:
        z.write(tmp_path / "obj.npy", "source.npy")
        z.write(tmp_path / "obj.npy", "target.npy")
    with pytest.raises(DataError, match="an object array"):
        pairs.read_pairs(pairs.PairsOptions(str(tmp_path / "pickled.npz")))
    np.savez(tmp_path / "neg.npz", source=np.array([[1, -2]]), target=np.array([[1]]))
    with pytest.raises(DataError, match=r"source: expected token ids >= 0, got -2"):
        pairs.read_pairs(pairs.PairsOptions(str(tmp_path / "neg.npz")))


def test_hostile_pair_files_are_refused_before_reading(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.txt")
    (tmp_path / "t.txt").write_text("a\n")
    with pytest.raises(DataError, match="expected a regular file, got a FIFO"):
        pairs.read_pairs(pairs.PairsOptions(str(tmp_path / "fifo.txt"), str(tmp_path / "t.txt")))
    (tmp_path / "nul.txt").write_bytes(b"ab\x00\n")
    with pytest.raises(DataError, match="holds NUL bytes"):
        pairs.read_pairs(pairs.PairsOptions(str(tmp_path / "nul.txt"), str(tmp_path / "t.txt")))
    np.savez(tmp_path / "big.npz", source=np.ones((64, 1024), np.int64), target=np.ones((64, 8)))
    with pytest.raises(DataError, match=r"more than the 0.0001 GiB data.max_gib allows"):
        pairs.read_pairs(pairs.PairsOptions(str(tmp_path / "big.npz"), max_gib=1e-4))
    np.savez(tmp_path / "floats.npz", source=np.ones((2, 3)), target=np.ones((2, 3)))
    with pytest.raises(DataError, match="source: expected integer token ids, got float64"):
        pairs.read_pairs(pairs.PairsOptions(str(tmp_path / "floats.npz")))


def test_files_of_sources_to_predict_on_are_read_as_the_task_reads_them(tmp_path):
    ids = pairs.vocab_of([["0", "1", "2"]], [["0"]], " ")
    chars = pairs.vocab_of([list("abc")], [list("x")], "")
    options = pairs.PairsOptions()
    np.savez(tmp_path / "s.npz", source=np.array([[2, 1, 0], [1, 1, 9]]), source_lengths=[3, 2])
    assert pairs.read_sources(options, ids, tmp_path / "s.npz") == (["2 1 0", "1 1"],)
    (tmp_path / "s.csv").write_text("source,target\n012,x\nab,\n")
    assert pairs.read_sources(options, chars, tmp_path / "s.csv") == (["012", "ab"],)
    (tmp_path / "s.txt").write_text("cab\nb\n")
    assert pairs.read_sources(options, chars, tmp_path / "s.txt") == (["cab", "b"],)
    np.savez(tmp_path / "bad.npz", source=np.array([[1, 2]]), source_lengths=[3])
    with pytest.raises(DataError, match=r"source_lengths: expected values in \[0, 2\]"):
        pairs.read_sources(options, ids, tmp_path / "bad.npz")


@pytest.mark.parametrize("separator", ["", " "])
def test_a_vocabulary_encodes_and_decodes_back(separator):
    symbols = ("a", "b", "c") if not separator else ("10", "11", "12")
    vocab = rj_data.Seq2SeqVocab(symbols, symbols[::-1], separator)
    texts = [separator.join(t) for t in (symbols, symbols[:1], symbols[::-1] * 2)]
    ids, lengths = vocab.encode(texts, "target", width=6)
    assert ids.shape == (3, 6) and list(lengths) == [3, 1, 6]
    assert (ids[0, 3:] == vocab.pad_id).all() and ids.min() >= 0 and ids.max() < vocab.target_size
    assert vocab.decode(ids) == texts  # the oracle: the texts themselves
    with_eos = np.concatenate([ids[:, :1], np.full((3, 1), vocab.eos_id), ids[:, 1:]], 1)
    assert vocab.decode(with_eos) == [t[: len(symbols[0])] for t in texts]  # stops at EOS
    with pytest.raises(DataError, match="target 1: expected at most 2 symbols, got 3"):
        vocab.encode([texts[1], texts[0]], "target", width=2)


def test_the_arrays_task_points_a_file_of_pairs_to_the_pairs_task(tmp_path):
    from recurrent_jax.data import arrays

    np.savez(tmp_path / "p.npz", source=np.ones((2, 3), int), target=np.ones((2, 2), int))
    with pytest.raises(DataError, match="source/target pairs train with data.task='pairs'"):
        arrays.load_splits(arrays.ArraysOptions(path=str(tmp_path / "p.npz")))
