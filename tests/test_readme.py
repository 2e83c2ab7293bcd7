"""The README's code blocks run as written, and so do the shell commands of
the docs (whose Python blocks tests/test_docs.py runs).

Each Python block runs alone, in a namespace of its own, as a reader
pasting just that block would run it. Shell blocks: every ``recurrent-jax`` command is parsed
by the command line's own parser, and its config (with overrides) is loaded
and validated, without training; the install commands are what ``.ci/run``
runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs_alone(index):
    pytest.importorskip("torch")
    pytest.importorskip("equinox")
    code, namespace = blocks("python")[index], {}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    if index == 0:
        assert namespace["ys"].shape == (32, 100, 256)  # the tour's bidirectional LSTM


def recurrent_jax_commands() -> list[list[str]]:
    """Every ``recurrent-jax`` command in the README's and the docs' shell blocks."""
    pages = [README, *sorted((README.parent / "docs").rglob("*.md"))]
    bodies = [b for page in pages for lang, b in FENCE.findall(page.read_text()) if lang == "bash"]
    commands = []
    for body in bodies:
        text = body.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("recurrent-jax"):
                commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.parametrize("argv", recurrent_jax_commands(), ids=" ".join)
def test_shell_commands_parse_and_their_configs_load(argv):
    pytest.importorskip("ml_collections")
    from recurrent_jax import cli
    from recurrent_jax.train import config_files
    from recurrent_jax.train import sweep_spec as spec
    from recurrent_jax.train.config import from_config_dict

    flags, overrides = config_files.split_overrides(argv)
    args = cli.build_parser().parse_args(flags)
    config_spec = getattr(args, "config", None)
    if config_spec is None:
        return  # list, eval, decode or a resume: no config to load
    config = config_files.load_config(config_spec)
    sweep_overrides = [(k, v) for k, v in overrides if k.split(".")[0] == "sweep"]
    config = config_files.apply_overrides(
        config, [o for o in overrides if o not in sweep_overrides]
    )
    if args.command == "sweep":
        raw = spec.apply_sweep_overrides(config.to_dict(), sweep_overrides)
        assert spec.parse_sweep(raw).runs
    else:
        from_config_dict(config)


def test_the_extras_table_names_what_each_extra_installs(monkeypatch, tmp_path):
    """Each row names the packages of its extra in pyproject.toml; the
    ``data`` extra is what CSV tables need too (not only Parquet)."""
    import sys
    import tomllib

    pyproject = tomllib.loads((README.parent / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    table = README.read_text().split("## Extras", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", table, re.M))
    for extra in ("experiments", "eqx", "interop", "data", "docs"):
        wanted = {re.split(r"[<>=\[ ]", requirement)[0].lower() for requirement in extras[extra]}
        named = set(re.findall(r"[\w.-]+", rows[extra].split(":")[0].lower()))
        assert wanted <= named, (extra, wanted - named)
    assert "CSV" in rows["data"]
    pytest.importorskip("pyarrow")
    from recurrent_jax.data import files
    from recurrent_jax.data.arrays import ArraysOptions
    from recurrent_jax.data.base import MissingExtraError

    (tmp_path / "t.csv").write_text("id,time,a,target\n0,0,1.0,0\n")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as without the extra
    with pytest.raises(MissingExtraError, match=r"pip install 'recurrent-jax\[data\]'"):
        files.read_arrays(tmp_path / "t.csv", ArraysOptions().columns())
