"""Objects named by import path, ``"package.module:name"``: a researcher's
own task or cell in a config (``data.task = "my_tasks:make_task"``,
``model.cell = "my_cells:my_cell"``).

Modules are looked up on ``sys.path``, then in the working directory and in
the folders of the config files loaded so far (``add_search_path``), so a
module beside the config file is importable without installing it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

_SEARCH_PATHS: list[str] = []


def is_import_path(spec) -> bool:
    """Whether ``spec`` has the form ``"module:name"``."""
    return isinstance(spec, str) and spec.count(":") == 1 and all(spec.split(":"))


def add_search_path(folder) -> None:
    """Makes the modules in ``folder`` importable by import paths."""
    folder = str(Path(folder).resolve())
    if folder not in _SEARCH_PATHS:
        _SEARCH_PATHS.append(folder)


def load_object(spec: str, *, what: str):
    """The object ``spec`` (``"module:name"``, dotted names allowed on both
    sides) names; a ValueError naming ``what`` and what was tried otherwise."""
    if not is_import_path(spec):
        raise ValueError(f"{what}: expected a registered name or 'module:name', got {spec!r}")
    module_name, attribute = spec.split(":")
    extra = [str(Path.cwd()), *_SEARCH_PATHS]
    sys.path.extend(p for p in extra if p not in sys.path)  # the module's own imports too
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        tried = ", ".join(dict.fromkeys(extra))
        raise ValueError(
            f"{what}: cannot import {module_name!r} for {spec!r} ({error}); looked on sys.path "
            f"and in {tried}"
        ) from None
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ValueError(f"{what}: module {module_name!r} has no {attribute!r} (from {spec!r})")
        value = getattr(value, part)
    return value
