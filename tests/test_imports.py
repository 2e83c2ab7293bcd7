"""``import recurrent_jax`` for the cells and layers loads no upper layer:
the front doors, seq2seq and interop (flax), checkpoints (orbax) and plots
(matplotlib) load on first use."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HEAVY = ("flax", "orbax", "matplotlib", "ml_collections", "torch", "keras", "equinox")


def loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_the_core_imports_no_upper_layer():
    code = "import recurrent_jax as rj\nrj.unroll, rj.cells.lstm, rj.stack, rj.Engine"
    assert loaded_after(code).isdisjoint(HEAVY)


def test_the_doors_load_on_first_use():
    loaded = loaded_after("import recurrent_jax as rj\nrj.nn.LSTM")
    assert "flax" in loaded
    assert loaded.isdisjoint({"orbax", "matplotlib", "torch", "keras", "equinox"})


def test_training_and_sweeps_load_on_first_use():
    """``rj.train.make_train`` and ``rj.sweep.run_sweep`` as the guides write
    them, without ``import recurrent_jax`` loading either."""
    code = (
        "import recurrent_jax as rj\n"
        "assert not {'recurrent_jax.train', 'recurrent_jax.sweep'} & set(sys.modules)\n"
        "rj.train.make_train, rj.sweep.run_sweep, rj.train.ConfigError"
    )
    assert "ml_collections" not in loaded_after("import recurrent_jax as rj")
    assert "recurrent_jax" in loaded_after(code)


def private_jax_uses(source: str) -> list[str]:
    """The private JAX modules (``jax._src``, ``jaxlib``'s private ones) that
    ``source`` imports or reaches by attribute."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _private(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [n for n in [node.module, *names] if _private(n)][:1]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            name = f"{node.value.id}.{node.attr}"
            found += [name] if _private(name) else []
    return found


def _private(module: str) -> bool:
    """``jax._src``, ``jaxlib._jax``, ...; not ``jaxlib.__version__``."""
    parts = module.split(".")
    hidden = [p for p in parts[1:] if p.startswith("_") and not p.endswith("__")]
    return parts[0] in ("jax", "jaxlib") and bool(hidden)


def test_no_private_jax_module_is_used():
    """The library reaches JAX through its public API only, which jax 0.10
    and 0.11 both keep (private modules move between releases)."""
    snippets = ["from jax._src import core", "import jax._src.lax", "jax._src.x", "jax.__version__"]
    assert [bool(private_jax_uses(s)) for s in snippets] == [True, True, True, False]
    package = Path(__file__).parents[1] / "recurrent_jax"
    uses = {
        str(path.relative_to(package)): found
        for path in sorted(package.rglob("*.py"))
        if (found := private_jax_uses(path.read_text()))
    }
    assert not uses
