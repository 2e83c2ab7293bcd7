"""A process's own checkpoints when a sweep runs in several processes.

With several processes orbax writes only global arrays (a host-local array
is refused, and NumPy leaves are written by process 0 alone), while each
process of a sweep holds its own runs. So each process saves its stacked
state as NumPy files of its own: ``<directory>/<step>.npz`` (the leaves in
``jax.tree_util`` order, restored into the structure of a freshly
initialised state), keeping the last ``keep``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax.train.checkpoint import CheckpointError, move_aside


def save_tree(path: Path, tree) -> None:
    """Writes the leaves of ``tree`` to ``path`` (``.npz``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = [np.asarray(a) for a in jax.device_get(jax.tree_util.tree_leaves(tree))]
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        np.savez(f, *leaves)
    os.replace(partial, path)


def load_tree(path: Path, like):
    """The tree saved at ``path``, with the structure, shapes and dtypes of
    ``like`` (arrays or ``jax.ShapeDtypeStruct``)."""
    wanted, treedef = jax.tree_util.tree_flatten(like)
    try:
        with np.load(path) as f:
            leaves = [f[f"arr_{i}"] for i in range(len(f.files))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path} could not be read ({e})") from e
    got = [(a.shape, a.dtype) for a in leaves]
    want = [(tuple(a.shape), np.dtype(a.dtype)) for a in wanted]
    if got != want:
        raise CheckpointError(
            f"checkpoint {path} does not match this sweep's model: it holds {got[:3]}..., "
            f"the config builds {want[:3]}... ({len(got)} and {len(want)} arrays)"
        )
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in leaves])


class ProcessCheckpointer:
    """``Checkpointer``'s interface for one process's stacked sweep state."""

    def __init__(self, directory: Path, *, keep: int):
        self.directory, self.keep = Path(directory), keep

    def steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.stem) for p in self.directory.glob("*.npz") if p.stem.isdigit())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, state, eval_metrics: dict | None = None) -> None:
        step = int(state.step)
        if step in self.steps():
            return
        save_tree(self.directory / f"{step}.npz", state)
        for old in self.steps()[: -self.keep]:
            (self.directory / f"{old}.npz").unlink()

    def restore(self, step: int, like):
        return load_tree(self.directory / f"{step}.npz", like)

    def move_aside(self, step: int) -> Path:
        return move_aside(self.directory / f"{step}.npz", self.directory)

    def close(self) -> None:
        pass
