"""The ListOps task: every label equals a recursive-descent evaluation of
its expression written here from the task's definition (Nangia & Bowman
2018, as the Long Range Arena generates it), lengths and ids in bounds,
splits fixed by the seed."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from recurrent_jax.data import get_task
from recurrent_jax.data.listops import VOCAB, ListOpsOptions, splits

SMALL = ListOpsOptions(train_size=300, test_size=50, min_length=5, max_length=120, max_depth=5)


def evaluate(text: str) -> int:
    """The value of a whole expression in ListOps' prefix syntax, e.g.
    ``[MAX 4 [SM 9 8 ] ]`` -> 7; raises unless ``text`` is exactly one."""
    words = text.split()
    value, end = _parse(words, 0)
    if end != len(words):
        raise ValueError(f"trailing tokens after position {end}: {words[end:]}")
    return value


def _parse(words, at):
    word = words[at]
    if word.isdigit():
        return int(word), at + 1
    args, at = [], at + 1
    while words[at] != "]":
        arg, at = _parse(words, at)
        args.append(arg)
    if len(args) < 2:
        raise ValueError(f"{word} with {len(args)} arguments")
    ordered = sorted(args)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2
    results = {"[MIN": ordered[0], "[MAX": ordered[-1], "[MED": median, "[SM": sum(args) % 10}
    return results[word], at + 1


def test_the_evaluator_itself():
    assert evaluate("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]") == 5
    assert evaluate("[MED 1 2 6 9 ]") == 4  # (2 + 6) / 2
    assert evaluate("[MED 1 2 ]") == 1  # 1.5 rounded down
    assert evaluate("[SM 9 8 [MIN 7 5 ] ]") == 2  # 22 mod 10
    with pytest.raises(ValueError):
        evaluate("[MIN 7 5 ] 3")


def rows(batch):
    for ids, label, length in zip(batch.xs, batch.targets, batch.seq_lengths, strict=True):
        yield [VOCAB[i] for i in ids[:length]], int(label), ids[length:]


@pytest.mark.parametrize("options", [SMALL, ListOpsOptions(train_size=20, test_size=5)], ids=str)
def test_labels_are_the_values_of_the_expressions(options):
    train, test = splits(options)
    for batch in (train, test):
        for words, label, padding in rows(batch):
            assert evaluate(" ".join(words)) == label, " ".join(words)
            assert options.min_length <= len(words) <= options.max_length
            assert not padding.any()  # padded with id 0 after the expression
            assert "<pad>" not in words


def test_depth_and_arguments_within_their_bounds():
    train, _ = splits(SMALL)
    for words, _, _ in rows(train):
        depth = deepest = 0
        for word in words:
            depth += word.startswith("[") - (word == "]")
            deepest = max(deepest, depth)
        assert deepest <= SMALL.max_depth - 1  # a node at max_depth is a digit
    assert set(np.unique(train.targets)) == set(range(10))  # every class occurs in 300 rows


def test_the_seed_fixes_the_splits():
    again = ListOpsOptions(**{**SMALL.__dict__})
    other = ListOpsOptions(**{**SMALL.__dict__, "seed": 1})
    splits.cache_clear()  # generate anew, not from the cache
    first = splits(SMALL)
    splits.cache_clear()
    for a, b in zip(first, splits(again), strict=True):
        np.testing.assert_array_equal(a.xs, b.xs)
        np.testing.assert_array_equal(a.targets, b.targets)
    assert not np.array_equal(splits(other)[0].targets, first[0].targets)


def test_the_task_feeds_token_ids():
    task = get_task("listops").build(SMALL)
    assert task.input_vocab == task.input_size == len(VOCAB) == 16 and task.output_size == 10
    batch = task.sample_train(jax.random.PRNGKey(0), 7)
    assert batch.xs.shape == (7, SMALL.max_length) and batch.xs.dtype == np.int32
    assert batch.targets.shape == (7,) and batch.seq_lengths.shape == (7,)
    held_out = task.eval_set(jax.random.PRNGKey(1), 20)  # the first 20 test rows
    np.testing.assert_array_equal(held_out.targets, splits(SMALL)[1].targets[:20])
    streamed = task.train_rows.take(np.array([3, 0]))
    np.testing.assert_array_equal(streamed.xs, splits(SMALL)[0].xs[[3, 0]])
    assert 0 < task.baselines["accuracy (majority class)"] < 1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_length", 4, "max_length: expected at least 5, got 4"),
        ("max_args", 1, "max_args: expected at least 2, got 1"),
        ("train_size", 0, "train_size"),
    ],
)
def test_bad_options_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        ListOpsOptions(**{**SMALL.__dict__, "min_length": 5, field: value})


@pytest.mark.slow
def test_the_smoke_config_learns_single_operators(tmp_path):
    """The config's model (an S5 layer) on a small generated set of single
    operators over 2-3 digits: 400 steps lift test accuracy well above the
    majority class (0.146 of these 500; 0.57 reached here, seed 0)."""
    pytest.importorskip("ml_collections")
    from recurrent_jax.train import config_files, from_config_dict
    from recurrent_jax.train.loop import train_and_evaluate

    config = config_files.load_config("listops:smoke")
    easy = dict(max_depth=2, max_args=3, min_length=4, max_length=5, train_size=2000)
    config.data.update(test_size=500, eval_size=500, batch_size=64, **easy)
    config.model.update(hidden_size=32, embedding_size=16)
    config.optimizer.update(learning_rate=1e-2)
    config.training.update(num_steps=400, steps_per_call=100, eval_every=400)
    summary = train_and_evaluate(from_config_dict(config), tmp_path, progress=False)
    majority = summary["baselines"]["accuracy (majority class)"]
    assert summary["final_eval"]["accuracy"] > majority + 0.25, (summary["final_eval"], majority)
