"""Seq2seq through the experiments layer: a config trains end to end from the
CLI and writes metrics, decoded samples and attention maps; a saved run
decodes with another decoder; bad keys are errors naming the key; scheduled
sampling stays a traced, vmappable hyperparameter."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("ml_collections")

from recurrent_jax import cli  # noqa: E402
from recurrent_jax.data import seq2seq_tasks as s2s_data  # noqa: E402
from recurrent_jax.data.seq2seq_specs import CHAR_VOCAB  # noqa: E402
from recurrent_jax.seq2seq import beam_search  # noqa: E402
from recurrent_jax.train import (
    config_files,  # noqa: E402
    core,  # noqa: E402
)
from recurrent_jax.train import seq2seq_model as stages  # noqa: E402
from recurrent_jax.train.config import ConfigError, from_config_dict  # noqa: E402
from recurrent_jax.train.eval_run import restore_run  # noqa: E402
from recurrent_jax.train.models import make_model  # noqa: E402
from recurrent_jax.train.seq2seq_outputs import format_samples  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("seq2seq") / "run"
    args = ["train", "--config=seq2seq_addition:smoke", f"--workdir={workdir}", "--no-progress"]
    assert cli.main(args) == 0
    return workdir


def test_smoke_run_writes_metrics_samples_and_attention(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 10, 20]
    for name in ("loss", "token_accuracy", "sequence_accuracy", "exact_match"):
        assert 0.0 <= evals[-1][name] < float("inf")
    assert {"loss", "token_accuracy", "sequence_accuracy"} <= set(records[-2])
    lines = (run_dir / "samples" / "step_000020.txt").read_text().splitlines()
    assert len(lines) == 32 and all("→" in line and " | " in line for line in lines)
    png = run_dir / "plots" / "attention_step_000020.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["samples"] == "samples/step_000020.txt"
    assert "plots/attention_step_000020.png" in summary["plots"]
    assert summary["primary_metric"] == "exact_match"


def test_decode_with_beam_equals_beam_search_on_restored_params(run_dir, capsys):
    code = cli.main(["decode", f"--workdir={run_dir}", "--method=beam", "--beam-size=3"])
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("\n{") + 1 :])
    assert report["method"] == "beam" and 0.0 <= report["exact_match"] <= 1.0
    run = restore_run(run_dir)
    config, params = run.config, run.params
    batch = jax.device_get(run.program.eval_batch(run.keys[0]))
    model = stages.network(config.model, run.program.setup.task)
    state = model.initial_decoder_state(params, batch.src, batch.src_lengths)
    step_fn = functools.partial(model.decode_step, params)
    ids = dict(bos_id=s2s_data.BOS_ID, eos_id=s2s_data.EOS_ID, pad_id=s2s_data.PAD_ID)
    direct = beam_search(step_fn, state, beam_size=3, max_len=batch.tgt_out.shape[1], **ids)
    want = format_samples(CHAR_VOCAB, batch.src, batch.src_lengths, direct.sequences, batch.tgt_out)
    assert (run_dir / "decoded_beam.txt").read_text().splitlines() == want


def test_eval_of_the_saved_run(run_dir):
    assert cli.main(["eval", f"--workdir={run_dir}"]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert {"loss", "token_accuracy", "sequence_accuracy", "exact_match"} <= set(report["eval"])


def test_decode_greedy_of_raw_sources(run_dir, capsys):
    args = ["decode", f"--workdir={run_dir}", "--source=12+5", "--source=999+1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("12+5 → ") and "999+1 → " in out


def test_decode_rejects_options_of_other_methods(run_dir, capsys):
    assert cli.main(["decode", f"--workdir={run_dir}", "--beam-size=3"]) == 2
    assert "--beam-size" in capsys.readouterr().err


def _config(**model):
    config = config_files.load_config("seq2seq_addition:smoke")
    with config.unlocked():
        config.model.update(model)
    return config


@pytest.mark.parametrize(
    "key, value",
    [
        ("attention", "bahdanau"),
        ("bridge", "mean"),
        ("feedback", "top"),
        ("sampling_schedule", "cosine"),
        ("label_smoothing", 1.0),
        ("beam_size", -1),
        ("kind", "transformer"),
        ("dropout", 0.1),
    ],
)
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"config.model.{key}"):
        from_config_dict(_config(**{key: value}))


def test_schedule_constant_checked_for_its_schedule():
    with pytest.raises(ConfigError, match="config.model.schedule_k"):
        from_config_dict(_config(sampling_schedule="exponential", schedule_k=2.0))


def test_unknown_key_and_mismatched_task(capsys):
    assert cli.main(["train", "--config=seq2seq_addition:smoke", "--config.model.atention=dot"])
    assert "config.model: unknown key(s) ['atention']" in capsys.readouterr().err
    rnn = config_files.load_config("adding:smoke").to_dict()
    s2s = config_files.load_config("seq2seq_addition:smoke").to_dict()
    with pytest.raises(ConfigError, match="config.model.kind: expected 'rnn'"):
        core.make_setup(from_config_dict({**rnn, "model": s2s["model"]}))
    with pytest.raises(ConfigError, match="config.model.kind: expected 'seq2seq'"):
        core.make_setup(from_config_dict({**s2s, "model": rnn["model"]}))


def test_a_key_of_another_model_kind_is_an_error_naming_it():
    rnn = config_files.load_config("adding:smoke").to_dict()
    with pytest.raises(
        ConfigError, match=r"config.model.beam_size: applies to model.kind 'seq2seq'"
    ):
        from_config_dict({**rnn, "model": {**rnn["model"], "beam_size": 2}})
    s2s = config_files.load_config("seq2seq_addition:smoke").to_dict()
    with pytest.raises(ConfigError, match=r"config.model.zoneout: applies to model.kind 'rnn'"):
        from_config_dict({**s2s, "model": {**s2s["model"], "zoneout": 0.1}})
    with pytest.raises(ConfigError, match="config.model.kind"):
        from_config_dict({**rnn, "model": {**rnn["model"], "kind": "transformer"}})


FAST = {"xla_backend_optimization_level": 0}


def test_scheduled_sampling_under_jit_and_vmap_of_hparams():
    config = from_config_dict(_config(sampling_prob=0.5))
    forced = from_config_dict(_config(sampling_prob=0.0))
    task = core.build_task(config)
    sampled, teacher = make_model(config.model, task), make_model(forced.model, task)
    hparams = core.default_hparams(config)
    probs = jnp.array([0.0, 0.5, 1.0], jnp.float32)
    stacked = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (3,)), hparams)
    stacked = stacked._replace(sampling_prob=probs)

    @functools.partial(jax.jit, compiler_options=FAST)
    def losses(stacked, key):
        k_init, k_data, k_loss = jax.random.split(key, 3)
        params = sampled.init(hparams, k_init)
        batch = task.sample_train(k_data, 8)
        loss = lambda model, h: model.loss(h, params, batch, k_loss, jnp.int32(0))
        return jax.vmap(functools.partial(loss, sampled))(stacked), loss(teacher, hparams)[0]

    (got, metrics), want = losses(stacked, jax.random.key(0))
    np.testing.assert_array_equal(metrics["sampling_prob"], probs)
    np.testing.assert_allclose(got[0], want, rtol=1e-6)  # p = 0 is teacher forcing
    assert got[2] != want  # p = 1 feeds back the (untrained) model's samples


def test_sampling_probability_follows_the_schedule():
    config = from_config_dict(
        _config(sampling_prob=0.5, sampling_schedule="linear", schedule_k=1.0, schedule_c=0.1)
    )
    hparams = core.default_hparams(config)
    steps = jnp.array([0, 5, 20])
    got = jax.vmap(lambda s: stages.sampling_probability(config.model, hparams, s))(steps)
    np.testing.assert_allclose(got, [0.0, 0.25, 0.5], atol=1e-6)


@pytest.mark.slow
def test_make_train_vmaps_over_sampling_prob():
    config = from_config_dict(_config(sampling_prob=0.5, beam_size=2))
    train = core.make_train(config)
    hparams = core.default_hparams(config)
    stacked = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (2,)), hparams)
    stacked = stacked._replace(sampling_prob=jnp.array([0.0, 1.0], jnp.float32))
    keys = jnp.stack([jax.random.key(0)] * 2)
    _, metrics = jax.jit(jax.vmap(train))(stacked, keys)
    assert metrics["eval"]["exact_match"].shape == (2,)
    assert metrics["eval"]["beam_exact_match"].shape == (2,)
    assert np.all(np.isfinite(metrics["train"]["loss"]))


def _breakdown_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "experiments" / "analysis" / "addition_breakdown.py"
    spec = importlib.util.spec_from_file_location("addition_breakdown", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_addition_breakdown_per_example_match_equals_the_metric():
    script = _breakdown_script()
    batch = s2s_data.addition(jax.random.key(3), 12, max_digits=3, split="eval")
    sequences = np.array(batch.tgt_out)
    lengths = np.asarray(batch.tgt_lengths)
    sequences[::3, 0] = s2s_data.BOS_ID  # wrong first digit
    sequences[1::3, lengths[1::3] - 1] = s2s_data.PAD_ID  # EOS missing
    beyond = lengths < sequences.shape[1]  # a change after EOS does not count
    sequences[2::3][beyond[2::3], -1] = 7
    right = script.exact_per_example(sequences, batch)
    one = lambda i: jax.tree_util.tree_map(lambda a: a[i : i + 1], batch)
    want = [float(stages.exact_match(sequences[i : i + 1], one(i))) == 1.0 for i in range(12)]
    assert right.tolist() == want and not right[::3].any() and right[2::3].all()


def test_addition_breakdown_of_a_saved_run(run_dir):
    table, overall = _breakdown_script().breakdown(str(run_dir), 20, seed=1)
    cells = [line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| ")]
    counts = [int(c) for c in cells if c.isdigit()]
    assert counts[-1] == 20 and sum(counts[:-1]) == 20 and 0.0 <= overall <= 1.0
    with pytest.raises(SystemExit):
        _breakdown_script().main([f"--workdir={run_dir}", "--size=0"])
