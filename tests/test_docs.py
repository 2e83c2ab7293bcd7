"""The documentation cannot rot: every Python block of every page under
``docs/`` runs (in order, one namespace per page), and every public name of
the API reference has a docstring."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PAGES = sorted(p for p in DOCS.rglob("*.md") if FENCE.search(p.read_text()))
PUBLIC_MODULES = [
    "recurrent_jax",
    "recurrent_jax.cells",
    "recurrent_jax.engine",
    "recurrent_jax.backends",
    "recurrent_jax.convolution",
    "recurrent_jax.layers",
    "recurrent_jax.online",
    "recurrent_jax.mamba",
    "recurrent_jax.short_conv",
    "recurrent_jax.packing",
    "recurrent_jax.cells.conv",
    "recurrent_jax.data.listops",
    "recurrent_jax.train.models",
    "recurrent_jax.train.hparams",
    "recurrent_jax.nn",
    "recurrent_jax.nnx",
    "recurrent_jax.eqx",
    "recurrent_jax.seq2seq",
    "recurrent_jax.interop",
    "recurrent_jax.train",
    "recurrent_jax.sweep",
]


# Smoke sizes for pages whose code trains at full size (same code otherwise).
SMOKE = {"scaling.md": [('load_config("digits")', 'load_config("digits:smoke")'),
                        ("n = 256", "n = 8")],
         "own-data.md": [("num_steps=300", "num_steps=20"), ("eval_every=100", "eval_every=20"),
                         ("steps_per_call=50", "steps_per_call=10"),
                         ("num_steps=100", "num_steps=20"),
                         ("eval_every=50", "eval_every=10")],
         "after-training.md": [("num_steps=200", "num_steps=20"),
                               ("eval_every=100", "eval_every=20"),
                               ("steps_per_call=50", "steps_per_call=10")]}  # fmt: skip
RUNNER = """
import sys
namespace = {}
for index, code in enumerate(sys.argv[1:]):
    exec(compile(code, f"python block {index}", "exec"), namespace)
"""


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs(page):
    """Each page runs in a fresh process with 8 CPU devices (the scaling
    guide lays meshes over 8), its blocks in order in one namespace."""
    pytest.importorskip("torch")
    pytest.importorskip("ml_collections")
    blocks = FENCE.findall(page.read_text())
    for old, new in SMOKE.get(page.name, []):
        assert any(old in b for b in blocks), f"{page.name}: {old!r} not found"
        blocks = [b.replace(old, new) for b in blocks]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, *blocks],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=DOCS.parent,
    )
    assert out.returncode == 0, f"{page.name}:\n{out.stderr[-3000:]}"


def public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        value = getattr(module, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            yield name, value


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_names_have_docstrings(module_name):
    pytest.importorskip("equinox")
    module = importlib.import_module(module_name)
    assert inspect.getdoc(module), f"{module_name} has no module docstring"
    missing = [
        name
        for name, value in public_names(module)
        if value.__module__.startswith("recurrent_jax") and not inspect.getdoc(value)
    ]
    assert not missing, f"{module_name}: public names without a docstring: {missing}"


# The packages whose ``__all__`` is the public surface the reference shows.
REFERENCED_PACKAGES = [
    "recurrent_jax",
    "recurrent_jax.cells",
    "recurrent_jax.online",
    "recurrent_jax.nn",
    "recurrent_jax.nnx",
    "recurrent_jax.eqx",
    "recurrent_jax.seq2seq",
    "recurrent_jax.interop",
    "recurrent_jax.data",
    "recurrent_jax.train",
    "recurrent_jax.sweep",
]


@pytest.fixture(scope="module")
def built_reference(tmp_path_factory):
    """Every identifier of the built site's API reference (mkdocstrings'
    inventory, ``objects.inv``)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("equinox")
    site = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=DOCS.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    header_and_body = (site / "objects.inv").read_bytes().split(b"\n", 4)
    body = zlib.decompress(header_and_body[4]).decode()
    return {line.split(" ")[0] for line in body.splitlines() if line.strip()}


@pytest.mark.parametrize("package", REFERENCED_PACKAGES)
def test_every_exported_name_is_in_the_built_reference(package, built_reference):
    names = importlib.import_module(package).__all__
    missing = [name for name in names if f"{package}.{name}" not in built_reference]
    assert not missing, f"{package}: in __all__ but not in the API reference: {missing}"


def test_guide_copies_of_example_files_match_them():
    """A block that starts with ``# examples/...`` is that file, verbatim."""
    for page in PAGES:
        for block in FENCE.findall(page.read_text()):
            first, _, rest = block.partition("\n")
            if first.startswith("# examples/"):
                path = DOCS.parent / first[2:]
                assert rest == path.read_text(), f"{page.name}: {path} differs from its copy"


def test_the_own_data_guide_states_the_held_out_default():
    """It said "a tenth of the rows" while the default was 0.2."""
    from recurrent_jax.data.arrays import ArraysOptions

    text = (DOCS / "guides" / "own-data.md").read_text()
    fraction = ArraysOptions().valid_fraction
    stated = re.findall(r"`data\.valid_fraction=([0-9.]+)`", text)
    assert stated and {float(v) for v in stated} == {fraction}, stated
    assert "A fifth of the rows" in text and fraction == 1 / 5
