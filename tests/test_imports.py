"""``import recurrent_jax`` for the cells and layers loads no upper layer:
the front doors, seq2seq and interop (flax), checkpoints (orbax) and plots
(matplotlib) load on first use."""

from __future__ import annotations

import subprocess
import sys

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
