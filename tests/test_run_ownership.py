"""A run directory belongs to one kind of run (``run.json``, written
first): every command on a directory of another kind, on a folder that is
not a run directory, or inside the data the run reads, is refused in one
line with exit 2 and every file of it byte-identical (contents, modes and
modification times, the folders' too); the run there then resumes and
completes with the records of a run nothing happened to."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from recurrent_jax import cli  # noqa: E402
from recurrent_jax.sweep import parse_sweep, run_sweep  # noqa: E402
from recurrent_jax.train import config_files, from_config_dict, rundir  # noqa: E402
from recurrent_jax.train.config import ConfigError  # noqa: E402
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402

TRAIN = ["--config=adding:smoke", "--config.training.eval_every=10", "--no-progress"]
SWEEP = ["--config=adding_sweep:smoke", "--no-progress", "--compilation-cache=none"]


def snapshot(root: Path) -> dict:
    """Every file and folder under ``root`` (itself included): its bytes'
    hash, mode and modification time."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        out[str(path.relative_to(root))] = (digest, stat.st_mode, stat.st_mtime_ns)
    return out


def refused(argv, capsys, argument: str = "--workdir") -> str:
    """The one line ``recurrent-jax argv`` fails with (exit 2), naming ``argument``."""
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"recurrent-jax: error: {argument}:") and "\n" not in err, err
    return err


def train_config():
    config = config_files.load_config("adding:smoke")
    return from_config_dict(config_files.apply_overrides(config, [("training.eval_every", "10")]))


def sweep_plan():
    return parse_sweep(config_files.load_config("adding_sweep:smoke").to_dict())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A training run and a sweep that nothing interrupted."""
    root = tmp_path_factory.mktemp("finished")
    train_and_evaluate(train_config(), root / "train", progress=False)
    run_sweep(sweep_plan(), root / "sweep", progress=False)
    return root


@pytest.mark.slow
def test_sweep_on_a_training_run_changes_nothing_and_the_run_completes(finished, tmp_path, capsys):
    workdir = tmp_path / "train"
    stopped = train_and_evaluate(
        train_config(), workdir, progress=False, should_stop=lambda step: step == 10
    )
    assert stopped["status"] == "interrupted"
    before = snapshot(workdir)
    err = refused(["sweep", *SWEEP, f"--workdir={workdir}"], capsys)
    assert "holds a training run ('adding')" in err
    assert f"`recurrent-jax train --workdir={workdir}`" in err
    # the sweep's config is the run's own plus a sweep section: refused all the same
    own = json.loads((workdir / rundir.CONFIG_FILE).read_text()) | {"sweep": {"seeds": 2}}
    (tmp_path / "own_sweep.json").write_text(json.dumps(own))
    err = refused(
        ["sweep", f"--config={tmp_path / 'own_sweep.json'}", f"--workdir={workdir}"], capsys
    )
    assert "holds a training run" in err
    assert snapshot(workdir) == before
    assert cli.main(["train", f"--workdir={workdir}", "--no-progress"]) == 0
    want = (finished / "train" / "metrics.jsonl").read_text()
    assert (workdir / "metrics.jsonl").read_text() == want
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == 10
    uninterrupted = json.loads((finished / "train" / "summary.json").read_text())
    for key in ("final_eval", "best_eval", "best_step"):
        assert summary[key] == uninterrupted[key], key


@pytest.mark.slow
def test_train_on_a_sweep_changes_nothing_and_the_sweep_completes(finished, tmp_path, capsys):
    workdir = tmp_path / "sweep"
    stopped = run_sweep(sweep_plan(), workdir, progress=False, should_stop=lambda s: s == 10)
    assert stopped["status"] == "interrupted"
    before = snapshot(workdir)
    for argv in (["train", *TRAIN], ["train", "--no-progress"]):  # a config, or a resume
        err = refused([*argv, f"--workdir={workdir}"], capsys)
        assert "holds a sweep ('adding_sweep')" in err
        assert f"`recurrent-jax sweep --workdir={workdir}`" in err
    for command in ("eval", "decode"):  # a sweep's runs are read one at a time
        err = refused([command, f"--workdir={workdir}"], capsys, "--run")
        assert "expected a run id 0..7 of the sweep" in err and "best_run" in err
    with pytest.raises(ConfigError, match="holds a sweep"):
        train_and_evaluate(train_config(), workdir, progress=False)
    assert snapshot(workdir) == before
    assert cli.main(["sweep", f"--workdir={workdir}", *SWEEP[1:]]) == 0
    for name in ("metrics.jsonl", "runs.csv", "runs.md"):
        assert (workdir / name).read_text() == (finished / "sweep" / name).read_text(), name


def without_lock(root: Path) -> dict:
    return {k: v for k, v in snapshot(root).items() if k != rundir.LOCK_FILE}


@pytest.mark.slow
def test_finished_runs_pointed_at_each_other_change_nothing(finished, tmp_path, capsys):
    """The newcomer's steps on a finished training run and a finished sweep
    (which rewrote the run's summary and deleted the sweep's records): each
    refused with every file byte-identical, and running each on its own
    directory again changes nothing either."""
    train, sweep = finished / "train", finished / "sweep"
    before = {train: snapshot(train), sweep: snapshot(sweep)}
    own = json.loads((train / rundir.CONFIG_FILE).read_text()) | {"sweep": {"seeds": 2}}
    (tmp_path / "own_sweep.json").write_text(json.dumps(own))
    for argv in (["sweep", *SWEEP], ["sweep", f"--config={tmp_path / 'own_sweep.json'}"]):
        assert "holds a training run" in refused([*argv, f"--workdir={train}"], capsys)
    for argv in (["train", *TRAIN], ["train", "--no-progress"]):
        assert "holds a sweep" in refused([*argv, f"--workdir={sweep}"], capsys)
    assert {train: snapshot(train), sweep: snapshot(sweep)} == before
    assert cli.main(["train", f"--workdir={train}", "--no-progress"]) == 0
    assert cli.main(["sweep", f"--workdir={sweep}", *SWEEP[1:]]) == 0
    capsys.readouterr()
    for root in (train, sweep):  # only the lock file was held and freed
        del before[root][rundir.LOCK_FILE]
        assert without_lock(root) == before[root]


@pytest.mark.slow
def test_a_sweeps_best_run_is_read_by_eval_and_written_by_its_sweep_only(finished, capsys):
    best = finished / "sweep" / "best_run"
    assert rundir.read_marker(best)["kind"] == rundir.BEST_RUN
    before = snapshot(best)
    err = refused(["train", *TRAIN, f"--workdir={best}"], capsys)
    assert "holds the best run of a sweep" in err
    assert snapshot(best) == before
    assert cli.main(["eval", f"--workdir={best}"]) == 0


def test_a_folder_that_is_not_a_run_directory_is_left_alone(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    for name in ("summary.json", "metrics.jsonl", "learning_curves.png", "notes.txt"):
        (folder / name).write_text(f"the user's own {name}\n")
    before = snapshot(folder)
    for command, config in (("train", TRAIN), ("sweep", SWEEP)):
        err = refused([command, *config, f"--workdir={folder}"], capsys)
        assert "holds files (learning_curves.png, metrics.jsonl, notes.txt and 1 more)" in err
        assert "no run.json" in err
    for command in ("eval", "decode"):
        assert "has no run.json" in refused([command, f"--workdir={folder}"], capsys)
    assert snapshot(folder) == before


@pytest.mark.parametrize("marker", ["garbled", "unknown kind", "a folder", "a fifo"])
def test_a_marker_that_cannot_be_read_is_refused(tmp_path, capsys, marker):
    path = tmp_path / rundir.MARKER_FILE
    if marker == "garbled":
        path.write_bytes(b"\x00{not json")
    elif marker == "unknown kind":
        path.write_text(json.dumps({"kind": "predict"}))
    elif marker == "a folder":
        path.mkdir()
    else:
        os.mkfifo(path)  # opening it would block
    before = snapshot(tmp_path)
    for argv in (["train", *TRAIN], ["eval"]):
        err = refused([*argv, f"--workdir={tmp_path}"], capsys)
        assert f"{path} is not a run marker of recurrent-jax" in err
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_finished_run_is_not_rewritten(finished, tmp_path, capsys):
    workdir = tmp_path / "train"
    train_and_evaluate(train_config(), workdir, progress=False)
    before = without_lock(workdir)
    assert cli.main(["train", *TRAIN, f"--workdir={workdir}"]) == 0
    assert "completed at step 30/30" in capsys.readouterr().out
    assert without_lock(workdir) == before  # the summary's seconds and plot list, among the rest


INSIDE = """
from recurrent_jax.train.config import base_config, shrink_to_smoke

def get_config(arg=None):
    config = base_config({task!r}, name="inside")
    config.data.update({key}="data", batch_size=4, eval_size=4)  # beside this file
    config.model.update(hidden_size=4, **{model})
    shrink_to_smoke(config)
    config.lock()
    return config
"""


def class_folders(data: Path) -> None:
    for name, words in (("neg", "bad dull awful"), ("pos", "good fine great")):
        (data / name).mkdir(parents=True)
        for i in range(4):
            (data / name / f"{i}.txt").write_text(f"{words} {i}")


def npy_folder(data: Path) -> None:
    data.mkdir()
    np.save(data / "x.npy", np.ones((8, 3, 2), np.float32))
    np.save(data / "y.npy", np.arange(8) % 2)


def hf_folder(data: Path) -> None:
    datasets = pytest.importorskip("datasets")
    split = datasets.Dataset.from_dict({"text": ["good fine", "bad dull"] * 4, "label": [1, 0] * 4})
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(data))


@pytest.mark.parametrize(
    "task, key, make, inside",
    [
        ("text_classes", "path", class_folders, "run"),
        ("text_classes", "path", class_folders, "neg/run"),
        ("arrays", "path", npy_folder, "runs/x"),
        ("hf", "dataset", hf_folder, "run"),
    ],
)
def test_a_run_directory_inside_the_data_it_reads_is_refused(
    tmp_path, capsys, monkeypatch, task, key, make, inside
):
    project = tmp_path / "project"
    project.mkdir()
    model = {} if task == "arrays" else {"embedding_size": 4}  # token ids: an embedding
    (project / "config.py").write_text(INSIDE.format(task=task, key=key, model=model))
    make(project / "data")
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    workdir = project / "data" / inside
    err = refused(["train", "--config=project/config.py", f"--workdir={workdir}"], capsys)
    want = f"is inside the data folder config.data.{key}={str(project / 'data')!r} that the run"
    assert want in err
    assert snapshot(tmp_path) == before


# --- the guide says what a run directory holds and which commands may touch it -----------

GUIDE = Path(__file__).parents[1] / "docs" / "guides" / "run-directories.md"


def guide_table(heading: str) -> list[list[str]]:
    """The rows of the first table under ``## heading`` in the guide."""
    section = GUIDE.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def a_directory_that_holds(what: str, folder: Path) -> Path:
    folder.mkdir()
    kinds = {
        "a training run": rundir.TRAIN,
        "a sweep": rundir.SWEEP,
        "a sweep's `best_run/`": rundir.BEST_RUN,
    }
    if what in kinds:
        rundir.mark(folder, kinds[what], name="x")
    elif what.startswith("files but no"):
        (folder / "notes.txt").write_text("mine")
    else:
        assert what.startswith("nothing yet"), what
    return folder


def test_the_guides_table_of_commands_is_what_every_command_checks(tmp_path):
    rows = guide_table("Which commands may touch it")
    assert len(rows) == 5
    for i, (what, *cells) in enumerate(rows):
        folder = a_directory_that_holds(what, tmp_path / str(i))
        for commands, cell in zip((["train"], ["sweep"], ["eval", "decode"]), cells, strict=True):
            for command in commands:
                try:
                    rundir.check(folder, command)
                    refused = False
                except ConfigError:
                    refused = True
                assert refused == cell.startswith("refused"), (what, command, cell)


@pytest.mark.slow
def test_the_guide_names_every_file_a_run_and_a_sweep_write(finished):
    rows = guide_table("What a run directory holds")
    named = [
        re.sub(r"<\w+>", "*", name).rstrip("/")
        for row in rows
        for name in re.findall(r"`([^`]+)`", row[0])
    ]
    best_run = next(row for row in rows if row[0] == "`best_run/`")
    for directory in (finished / "train", finished / "sweep", finished / "sweep" / "best_run"):
        for path in directory.iterdir():
            described = f"`{path.name}`" in best_run[2] and directory.name == "best_run"
            assert described or any(fnmatch.fnmatch(path.name, p) for p in named), path
