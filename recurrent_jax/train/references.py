"""What a config names outside itself: data files and code.

Paths: a task option declared with ``rj.data.path_option`` (``data.path``,
``data.eval_path``, a local ``data.dataset``...) is resolved once, to an
absolute path: relative to the config file's folder when written in a
config file (``config_files.load_config``), relative to the working
directory when given on the command line or in Python
(``from_config_dict``). A run directory records the absolute path, so
``eval`` and a resume work from any directory.

Code: ``data.task`` and ``model.cell`` may name code by import path
(``CODE_FIELDS``, also as values of ``sweep.grid``). A run directory
records the file each was loaded from (``with_imports``, the
``imports`` key of its ``config.json``), and a config read from JSON
imports only those files, and only when trusted if they lie outside the
package (``admit_code``; see ``recurrent_jax._imports``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from recurrent_jax import _imports
from recurrent_jax.data.base import path_options

CODE_FIELDS = (("data", "task"), ("model", "cell"))
IMPORTS_KEY = "imports"  # config.json: import path -> the file it was loaded from


# --- paths ------------------------------------------------------------------------------


def resolve_path(value: str, base: Path, or_name: bool) -> str:
    """``value`` made absolute against ``base`` (``~`` expanded); a value
    that may be a name (``or_name``) stays as it is unless that path exists."""
    if not isinstance(value, str) or not value or "://" in value:
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = Path(base) / path
    if or_name and not candidate.exists():
        return value
    return os.path.abspath(candidate)


def resolve_paths(data: Mapping, options: type, base: Path) -> dict:
    """The ``data`` section with the path options of its task's
    ``options`` dataclass resolved against ``base``."""
    resolved = dict(data)
    for name, or_name in path_options(options).items():
        if name in resolved:
            resolved[name] = resolve_path(resolved[name], base, or_name)
    return resolved


def resolve_grid_paths(sweep: Mapping, options: type, base: Path) -> None:
    """The path options swept in ``sweep.grid.data`` resolved in place."""
    grid = sweep.get("grid") if hasattr(sweep, "get") else None  # a dict or a ConfigDict
    data = grid.get("data") if hasattr(grid, "get") else None
    if not hasattr(data, "get"):
        return
    for name, or_name in path_options(options).items():
        values = data.get(name)
        if isinstance(values, list | tuple):
            data[name] = [resolve_path(v, base, or_name) for v in values]


def data_folders(data) -> dict[str, str]:
    """``config.data.<option>`` -> path of the folders a run reads
    (``data``: its ``DataConfig``)."""
    folders = {}
    for name in path_options(type(data.options)):
        value = getattr(data.options, name)
        if value and Path(value).is_dir():
            folders[f"config.data.{name}"] = value
    return folders


# --- code --------------------------------------------------------------------------------


def named_code(config: Mapping) -> dict[str, str]:
    """Key -> import path of every value of the config dict ``config``
    that names code: ``data.task``, ``model.cell`` and their
    ``sweep.grid`` values."""
    named = {}
    grid = ((config.get("sweep") or {}).get("grid")) or {}
    for section, field in CODE_FIELDS:
        value = (config.get(section) or {}).get(field)
        if _imports.is_import_path(value):
            named[f"config.{section}.{field}"] = value
        swept = (grid.get(section) or {}).get(field) if isinstance(grid, Mapping) else None
        for i, value in enumerate(swept if isinstance(swept, list | tuple) else ()):
            if _imports.is_import_path(value):
                named[f"config.sweep.grid.{section}.{field}[{i}]"] = value
    return named


def with_imports(config: Mapping) -> dict:
    """``config`` as a run directory saves it: with ``imports`` (import path
    -> the file its module was loaded from) when it names code outside the
    package (already imported: the config was checked)."""
    files = {spec: _imports.recorded_file(spec) for spec in named_code(config).values()}
    imports = {spec: file for spec, file in sorted(files.items()) if file is not None}
    return {**config, IMPORTS_KEY: imports} if imports else dict(config)


def admit_code(config: Mapping, *, source: str, trust: bool, search: bool = True) -> None:
    """Checks the code ``config`` (a dict read from JSON) names before any
    of it runs: each import path is imported from the file its
    ``imports`` record names (else found as ``_imports.locate`` finds it,
    in the working directory too when ``search``), and outside the
    package only when ``trust`` (``_imports.UntrustedCode`` otherwise)."""
    records = config.get(IMPORTS_KEY) or {}
    if not isinstance(records, Mapping):
        raise ValueError(
            f"config.{IMPORTS_KEY}: expected {{import path: file}}, got {records!r:.80}"
        )
    for key, spec in named_code(config).items():
        recorded = records.get(spec)
        if recorded is not None and not isinstance(recorded, str):
            raise ValueError(
                f"config.{IMPORTS_KEY}: expected a file for {spec!r}, got {recorded!r:.80}"
            )
        _imports.admit(spec, what=key, source=source, recorded=recorded, trust=trust, search=search)
