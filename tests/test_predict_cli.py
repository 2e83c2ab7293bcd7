"""``fit`` on arrays in memory trains the run a file of the same arrays
trains; ``recurrent-jax predict`` reads new inputs as the run's data
(npz, CSV tables) and writes what ``run.predict`` returns; a language
model's greedy continuation is the argmax of its full forward, step after
step; a seq2seq run decodes its sources as ``recurrent-jax decode``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from recurrent_jax import cli  # noqa: E402
from recurrent_jax.data import seq2seq_tasks as s2s_data  # noqa: E402
from recurrent_jax.data.arrays import save_arrays  # noqa: E402
from recurrent_jax.train import config_files, fit, from_config_dict, load_run  # noqa: E402
from recurrent_jax.train.config import ConfigError, base_config  # noqa: E402
from recurrent_jax.train.decode import decode_run  # noqa: E402
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402


def regression_data(rng, n: int):
    """Per-step regression: y_t = the running mean of the first feature."""
    x = rng.normal(size=(n, 8, 2)).astype(np.float32) * 3.0 + 2.0
    lengths = rng.integers(2, 9, n)
    y = np.cumsum(x[..., :1], 1) / np.arange(1, 9)[None, :, None]
    return x, y.astype(np.float32), lengths


def small_config(**data):
    config = base_config("arrays", name="regress")
    config.data.update(batch_size=16, eval_size=64, **data)
    config.model.update(hidden_size=8)
    config.training.update(num_steps=40, steps_per_call=20, eval_every=20, fast_compile=True)
    return config


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    """A per-step regression run on a file, a fifth of its rows held out."""
    folder = tmp_path_factory.mktemp("regress")
    data = regression_data(np.random.default_rng(3), 120)
    config = small_config(path=str(save_arrays(folder / "train.npz", *data)))
    train_and_evaluate(from_config_dict(config), folder / "run", progress=False)
    return folder, data


def test_fit_in_memory_is_the_run_of_a_file_of_the_same_arrays(regression_run, tmp_path):
    folder, data = regression_run
    in_memory = fit(small_config(), *data, progress=False)
    assert in_memory.workdir is None
    latest = load_run(folder / "run", step="latest")
    assert in_memory.step == latest.step == 40
    leaves = zip(_leaves(in_memory.params), _leaves(latest.params), strict=True)
    # The same rows, split, statistics and keys give the same params, up to
    # float32 rounding: one compiled call of 40 steps against the run's
    # calls of 20 fuse differently (a row or key out of place moves them by 1e-2).
    for got, want in leaves:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    summary = json.loads((folder / "run" / "summary.json").read_text())
    np.testing.assert_allclose(in_memory.metrics["mse"], summary["final_eval"]["mse"], rtol=1e-6)
    saved = fit(small_config(), *data, workdir=tmp_path / "run", progress=False)
    assert saved.workdir == tmp_path / "run" and (tmp_path / "run" / "data" / "train.npz").exists()
    x, y, lengths = data
    with pytest.raises(ConfigError, match="holds a run trained on other arrays"):
        fit(small_config(), x, y + 1.0, lengths, workdir=tmp_path / "run", progress=False)


def _leaves(tree):
    import jax

    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def test_predict_on_a_csv_table_writes_the_predictions_as_csv(regression_run, tmp_path, capsys):
    folder, (x, _, lengths) = regression_run
    rows = [["id", "time", "f0", "f1"]]
    for i in range(3):
        rows += [[f"s{i}", t, *map(float, x[i, t])] for t in range(lengths[i])]
    with (tmp_path / "new.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "preds.csv"
    argv = ["predict", f"--workdir={folder / 'run'}", f"--input={tmp_path / 'new.csv'}"]
    assert cli.main([*argv, f"--output={out}"]) == 0
    want = load_run(folder / "run").predict(x[:3], lengths[:3])
    table = list(csv.reader(out.open()))
    assert table[0] == ["row", "step", "values_0"]
    assert len(table) - 1 == sum(lengths[:3])  # a row per valid step
    got = {(int(r[0]), int(r[1])): float(r[2]) for r in table[1:]}
    for (i, t), value in got.items():
        np.testing.assert_allclose(value, want["values"][i, t, 0], rtol=1e-6)
    capsys.readouterr()
    assert cli.main([*argv, "--top-k=3"]) == 2  # a flag of another mode
    assert "--top-k: not an option of --input" in capsys.readouterr().err


def test_a_file_of_other_features_is_a_one_line_error(regression_run, tmp_path, capsys):
    folder, (x, y, lengths) = regression_run
    save_arrays(tmp_path / "wide.npz", np.concatenate([x, x], -1), y, lengths)
    argv = ["predict", f"--workdir={folder / 'run'}", f"--input={tmp_path / 'wide.npz'}"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "expected float features (N, T, 2) as the run's data" in err and "\n" not in err


@pytest.mark.slow
def test_a_language_models_greedy_continuation_is_its_forwards_argmax(tmp_path, capsys):
    config = from_config_dict(config_files.load_config("char_lm:smoke"))
    train_and_evaluate(config, tmp_path / "lm", progress=False)
    run = load_run(tmp_path / "lm")
    prompt = "We hold these"
    got = run.sample(prompt, 12, temperature=0)
    text = prompt
    for _ in range(12):  # the full forward on the text so far, its last step's argmax
        ids = run.task.inputs.tokenize(text)
        probabilities = run.predict(ids[None])["probabilities"]
        text += run.task.decode([int(np.argmax(probabilities[0, len(ids) - 1]))])
    assert got == text
    assert cli.main(["predict", f"--workdir={tmp_path / 'lm'}", f"--prompt={prompt}",
                     "--length=12", "--temperature=0"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == text
    top1 = run.sample(prompt, 12, temperature=1.0, top_k=1, seed=3)
    assert top1 == text  # k = 1 leaves only the argmax
    with pytest.raises(Exception, match="characters of the training text"):
        run.sample("\u2603", 3)


@pytest.mark.slow
def test_a_seq2seq_run_predicts_what_decode_decodes(tmp_path):
    config = from_config_dict(config_files.load_config("seq2seq_addition:smoke"))
    train_and_evaluate(config, tmp_path / "s2s", progress=False)
    sources = ["12+34", "7+8", "100+1"]
    want = decode_run(tmp_path / "s2s", sources=sources)["samples"]
    got = load_run(tmp_path / "s2s").predict(sources)
    assert [f"{s} → {t}" for s, t in zip(sources, got["text"], strict=True)] == want
    run = load_run(tmp_path / "s2s")
    beam = run.predict(sources, method="beam", beam_size=3)
    assert beam["sequences"].shape[0] == 3
    src, src_lengths = s2s_data.encode(sources)
    ids = dict(bos_id=s2s_data.BOS_ID, eos_id=s2s_data.EOS_ID, max_len=run.task.info["max_len"])
    for door in ("as_nn", "as_nnx", "as_eqx"):  # each door's Seq2Seq holds the run's params
        decoded = getattr(run, door)().decode(src, src_lengths, **ids)
        np.testing.assert_array_equal(decoded.sequences, got["sequences"])
