"""The command line: train, eval, list, overrides and error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

import recurrent_jax as rj  # noqa: E402
from recurrent_jax import cli  # noqa: E402
from recurrent_jax.train import config_files  # noqa: E402

REPO = Path(__file__).parents[1]


def test_list_shows_configs_and_tasks(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("adding", "copy", "digits", "parity", "japanese_vowels", "ucr"):
        assert name in out


def test_train_then_eval_then_relaunch(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = [
        "train",
        f"--config={REPO}/configs/adding.py:smoke",
        f"--workdir={workdir}",
        "--no-progress",
    ]
    assert cli.main([*args, "--config.optimizer.learning_rate=0.01"]) == 0
    out = capsys.readouterr().out
    assert "completed at step 30/30" in out and "baseline" in out
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["optimizer"]["learning_rate"] == 0.01

    assert cli.main(["eval", f"--workdir={workdir}"]) == 0
    report = json.loads(capsys.readouterr().out)
    summary = json.loads((workdir / "summary.json").read_text())
    assert report["step"] == summary["best_step"]
    assert report["eval"]["mse"] == pytest.approx(summary["best_eval"]["mse"], rel=1e-6)

    # The saved config.json relaunches the same run in a new directory.
    again = tmp_path / "again"
    code = cli.main(
        ["train", f"--config={workdir}/config.json", f"--workdir={again}", "--no-progress"]
    )
    assert code == 0
    assert (again / "metrics.jsonl").read_text() == (workdir / "metrics.jsonl").read_text()
    # --workdir alone resumes (here: finds the run complete).
    assert cli.main(["train", f"--workdir={workdir}", "--no-progress"]) == 0


def test_no_arguments_trains_the_default_config(monkeypatch):
    seen = {}
    monkeypatch.setitem(cli.COMMANDS, "train", lambda args, overrides: seen.update(vars(args)))
    cli.main([])
    assert seen["command"] == "train" and seen["config"] is None  # -> configs/adding.py
    assert config_files.resolve_config_path(config_files.DEFAULT_CONFIG)[0].name == "adding.py"
    cli.main(["--config=copy:smoke"])  # the subcommand defaults to train
    assert seen["config"] == "copy:smoke"


def test_bad_override_exits_2_with_the_key(capsys):
    code = cli.main(["train", "--config=adding:smoke", "--config.model.cell=lsmt"])
    assert code == 2
    err = capsys.readouterr().err
    assert "config.model.cell: expected one of ['conv_gru', 'conv_lstm', 'elman', 'gru', " in err
    assert "got 'lsmt'" in err


def test_unknown_config_file(capsys):
    assert cli.main(["train", "--config=nope.py"]) == 2
    assert "known configs" in capsys.readouterr().err


def test_eval_of_missing_run(tmp_path, capsys):
    assert cli.main(["eval", f"--workdir={tmp_path}"]) == 2
    assert "so it is not a run directory" in capsys.readouterr().err


def test_python_dash_m_help():
    result = subprocess.run(
        [sys.executable, "-m", "recurrent_jax", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "train" in result.stdout and "eval" in result.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"recurrent-jax {rj.__version__}"


def test_unknown_variant_is_an_error_listing_the_known_ones(capsys):
    """A typo after the colon used to run the full 1500-step job."""
    assert cli.main(["train", "--config=configs/adding.py:smokee"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "recurrent-jax: error: --config: unknown variant 'smokee' of adding.py; "
        "known variants: ['smoke']"
    )


@pytest.mark.parametrize("runs", [2, 0])
def test_train_mesh_runs_other_than_1_is_a_one_line_error(runs, tmp_path, capsys):
    """R > 1 used to train R copies of the one run; nothing is written."""
    workdir = tmp_path / "run"
    argv = ["train", "--config=adding:smoke", f"--workdir={workdir}", f"--mesh.runs={runs}"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "recurrent-jax: error: --mesh.runs: expected 1 for a training run (a sweep spreads "
        f"runs over devices; --mesh.data splits the run's batch), got {runs}"
    )
    assert not workdir.exists()


def test_list_shows_whole_descriptions_and_variants(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "variants: :smoke" in out
    assert "the LSTM should reach MSE < 0.01" in out  # a later line of adding's docstring


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_workdir_that_is_a_file_is_a_one_line_error(command, tmp_path, capsys):
    """No traceback, and the file named is left as it was."""
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    config = "configs/adding.py:smoke" if command == "train" else "configs/adding_sweep.py:smoke"
    for workdir, message in [
        (existing, f"expected a directory, got the file '{existing}'"),
        (existing / "run", f"cannot write to '{existing / 'run'}'"),
    ]:
        code = cli.main([command, f"--config={config}", f"--workdir={workdir}", "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"recurrent-jax: error: --workdir: {message}")
    assert existing.read_text() == "keep me"


def test_disk_full_while_checkpointing_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """The save of step 20 fails as a full disk would; the step-10 checkpoint
    and the metrics written before stay, and the run resumes from them."""
    import errno

    import orbax.checkpoint as ocp

    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    workdir = tmp_path / "run"
    args = ["train", "--config=configs/adding.py:smoke", f"--workdir={workdir}", "--no-progress"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "cannot save the checkpoint of step 20: No space left on device" in err[0]
    assert "kept (latest: step 10)" in err[0]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["10"]
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    assert cli.main(args) == 0  # resumes from step 10
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == 10


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_help_documents_overrides(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--config.a.b=value" in out and "--config.model.engine.remat=256" in out
