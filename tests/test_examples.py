"""Every script in examples/ runs end to end with --smoke (fresh process)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
EXPECTED = {
    "digits_classifier.py": r"test accuracy (0\.\d+|1\.0+)$",
    "nnx_char_lm.py": r"final loss \d+\.\d+; sample: .+$",
    "own_data.py": r"64 runs; best learning rate \d\.\d\de-\d\d, accuracy (0\.\d+|1\.000)$",
    "packed_sequences.py": r"final loss \d+\.\d+; padding removed \d+%$",
    "sweep_64.py": r"best learning rate: \d\.\d\de-\d\d$",
}


def test_every_example_has_an_expectation():
    assert sorted(EXPECTED) == [p.name for p in EXAMPLES]


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_with_smoke(script):
    pytest.importorskip("sklearn")
    pytest.importorskip("ml_collections")
    out = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert re.search(EXPECTED[script.name], last, re.S), last


def test_own_code_config_trains_from_the_command_line(tmp_path):
    """examples/own_code: a task and a cell beside the config, by import path."""
    pytest.importorskip("ml_collections")
    config = ROOT / "examples" / "own_code" / "config.py"
    command = ["train", f"--config={config}:smoke", f"--workdir={tmp_path / 'run'}"]
    out = subprocess.run(
        [sys.executable, "-m", "recurrent_jax.cli", *command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "three_sines (sines:make_task): completed at step 30/30" in out.stdout
