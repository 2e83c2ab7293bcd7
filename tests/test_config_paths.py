"""Where a data path is read from: a relative path in a config file is
relative to that file's folder, one on the command line (or in Python) to
the working directory; the run directory records it absolute, so eval and
a resume work from any directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

from recurrent_jax import cli  # noqa: E402
from recurrent_jax.sweep import parse_sweep  # noqa: E402
from recurrent_jax.train import config_files, from_config_dict, references  # noqa: E402

CONFIG = """
import ml_collections
from recurrent_jax.train.config import base_config, shrink_to_smoke

def get_config(arg=None):
    config = base_config("arrays", name="paths")
    config.data.update(path="data/train.npz", batch_size=4, eval_size=4)  # beside this file
    config.model.update(hidden_size=4)
    shrink_to_smoke(config)
    config.sweep = ml_collections.ConfigDict(
        {"grid": {"data": {"path": ["data/train.npz", "data/other.npz"]}}})
    config.lock()
    return config
"""


def arrays(path: Path, rows=12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(rows, 5, 2)).astype(np.float32), y=np.arange(rows) % 2)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A config in ``project/`` naming ``data/train.npz`` beside it, and a
    working directory elsewhere."""
    folder = tmp_path / "project"
    arrays(folder / "data" / "train.npz")
    arrays(folder / "data" / "other.npz")
    (folder / "config.py").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return folder


def saved_path(workdir: Path) -> str:
    return json.loads((workdir / "config.json").read_text())["data"]["path"]


@pytest.mark.slow
def test_a_config_files_paths_are_relative_to_it_and_saved_absolute(project, tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["train", f"--config={project / 'config.py'}", f"--workdir={workdir}", "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert saved_path(workdir) == str(project / "data" / "train.npz")
    third = tmp_path / "third"
    third.mkdir()
    os.chdir(third)  # eval and a resume, from yet another directory
    assert cli.main(["eval", f"--workdir={workdir}"]) == 0, capsys.readouterr().err
    assert cli.main(["train", f"--workdir={workdir}", "--no-progress"]) == 0
    best = json.loads((workdir / "summary.json").read_text())["best_step"]
    assert json.loads((workdir / "eval.json").read_text())["step"] == best


def test_a_path_on_the_command_line_is_relative_to_the_working_directory(project, tmp_path):
    mine = arrays(Path.cwd() / "mine.npz")
    raw = config_files.load_config(str(project / "config.py"))
    config_files.apply_overrides(raw, [("data.path", "mine.npz")])
    assert from_config_dict(raw).data.options.path == str(mine)
    relative = os.path.relpath(project / "config.py")  # the file named relatively, too
    raw = config_files.load_config(relative)
    assert from_config_dict(raw).data.options.path == str(project / "data" / "train.npz")


def test_a_json_configs_paths_are_relative_to_it(project, tmp_path):
    raw = config_files.load_config(str(project / "config.py")).to_dict()
    raw["data"]["path"] = "data/train.npz"
    (project / "copy.json").write_text(json.dumps(raw))
    loaded = config_files.load_config(str(project / "copy.json"))
    assert loaded.data.path == str(project / "data" / "train.npz")


def test_the_paths_a_config_file_sweeps_are_relative_to_it(project):
    plan = parse_sweep(config_files.load_config(str(project / "config.py")).to_dict())
    paths = [point.config.data.options.path for point in plan.points]
    assert paths == [str(project / "data" / name) for name in ("train.npz", "other.npz")]


@pytest.mark.parametrize(
    "value, or_name, want",
    [
        ("data/x.npz", False, "{base}/data/x.npz"),
        ("../x.npz", False, "{parent}/x.npz"),
        ("/abs/x.npz", False, "/abs/x.npz"),
        ("~/x.npz", False, "{home}/x.npz"),
        ("", False, ""),
        ("imdb", True, "imdb"),  # a hub name: no such path here
        ("local", True, "{base}/local"),  # a folder that exists
        ("https://host/ptb/", True, "https://host/ptb/"),
    ],
)
def test_resolve_path(tmp_path, value, or_name, want):
    base = tmp_path / "base"
    (base / "local").mkdir(parents=True)
    got = references.resolve_path(value, base, or_name)
    expected = want.format(base=base, parent=tmp_path, home=Path.home())
    assert got == expected
