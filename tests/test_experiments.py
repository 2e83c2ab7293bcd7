"""The research studies in ``experiments/``: every script's ``--smoke`` mode
runs its sweeps end to end and writes a report with its plots."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")
pytest.importorskip("matplotlib")

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
STUDIES = sorted(p.stem for p in EXPERIMENTS.glob("*.py") if not p.stem.startswith("_"))


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NEEDS = {"ucr_benchmark": "aeon"}  # studies whose data comes from an optional package


def test_every_study_is_listed():
    expected = {"long_range_memory", "forget_bias", "gru_vs_lstm", "parallel_cells"}
    assert expected | {"ucr_benchmark", "copy_memory", "online_copy"} <= set(STUDIES)
    assert "addition_breakdown" not in STUDIES  # analysis/ holds tools, not studies


@pytest.mark.parametrize("name", STUDIES)
def test_study_smoke_mode_writes_its_report(name, tmp_path):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    out = tmp_path / "reports"
    report = load(name).main(["--smoke", "--out", str(out), "--workdir", str(tmp_path / "runs")])
    text = report.read_text()
    assert report == out / f"{name}.md"
    assert f"python experiments/{name}.py --smoke" in text
    for heading in ("- Command:", "- Hardware:", "- Time:", "| "):
        assert heading in text
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(f"({p.name})" in text for p in pngs)
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 1000 < png.stat().st_size < 150_000
    assert (tmp_path / "runs").is_dir()


def test_state_space_memory_runs_one_length_at_given_rates(tmp_path):
    """``--rates`` skips the selection sweep and ``--lengths`` picks the
    verdict stages: the report shows the given rates and only that T."""
    study = load("state_space_memory")
    out, runs = tmp_path / "reports", tmp_path / "runs"
    rates = ["--rates", "lru=0.03,gru=0.01"]
    report = study.main(
        ["--smoke", "--lengths", "5", *rates, "--out", str(out), "--workdir", str(runs)]
    )
    text = report.read_text()
    assert "given with --rates: gru 0.01, lru 0.03." in text
    assert "| 5 | gru | 5 | 279 | 0.01 |" in text and "| 5 | lru | 6 | 289 | 0.03 |" in text
    assert sorted(p.name for p in runs.iterdir()) == ["verdict_T5"]  # no selection sweep
    for bad, named in ((["--rates", "gru=0.01"], "--rates"), (["--lengths", "7"], "--lengths")):
        with pytest.raises(SystemExit, match=named):
            study.main(["--smoke", *bad, "--out", str(out), "--workdir", str(runs)])
