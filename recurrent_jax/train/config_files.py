"""Experiment config files: loading, ``:variant`` resolution and overrides.

A config is ``configs/<name>.py`` (``get_config(arg)`` returning an
ml_collections ConfigDict, and optionally ``VARIANTS``, the accepted
``arg`` values), a bare name (``adding``) looked up in ``configs/``, or a
run's saved ``config.json``::

    config = load_config("adding:smoke")
    rest, overrides = split_overrides(["--workdir=x", "--config.model.hidden_size=64"])
    apply_overrides(config, overrides)   # parsed by the type already there

The sweep's dialect (``--config.sweep.*``, new keys allowed) is
``recurrent_jax.sweep.spec.apply_sweep_overrides``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
from pathlib import Path

from recurrent_jax import _imports
from recurrent_jax.train.config import ConfigError, check_keys

DEFAULT_CONFIG = "adding"


def configs_dirs() -> list[Path]:
    """Where bare config names are looked up: ./configs, then the repository's."""
    repo = Path(__file__).resolve().parents[2] / "configs"
    dirs = {d.resolve(): d for d in (repo, Path("configs")) if d.is_dir()}
    return list(dirs.values())


def resolve_config_path(spec: str) -> tuple[Path, str | None]:
    """``path[:arg]`` or ``name[:arg]`` -> (file, arg)."""
    path, _, arg = spec.partition(":")
    candidates = [Path(path)] + [d / f"{path}.py" for d in configs_dirs() if "/" not in path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, arg or None
    known = sorted(p.stem for d in configs_dirs() for p in d.glob("*.py"))
    raise FileNotFoundError(f"--config: no config file {path!r}; known configs: {known}")


def load_config(spec: str):
    """The locked ConfigDict of ``path[:arg]`` (a .py config or a .json)."""
    ml_collections = _require("ml_collections", "ml-collections")

    path, arg = resolve_config_path(spec)
    if path.suffix == ".json":  # a saved config.json or sweep.json
        config = ml_collections.ConfigDict(json.loads(path.read_text()))
    else:
        _imports.add_search_path(path.parent)  # its own tasks and cells, by import path
        module_spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path}: expected a function get_config(arg=None)")
        check_variant(path, arg, getattr(module, "VARIANTS", None))
        config = module.get_config(arg) if arg is not None else module.get_config()
    config.lock()
    return config


def check_variant(path: Path, arg: str | None, variants) -> None:
    """A config that declares ``VARIANTS`` accepts only those after the colon
    (a typo would otherwise run the full default job)."""
    if arg is not None and variants is not None and arg not in variants:
        raise ConfigError(
            f"--config: unknown variant {arg!r} of {path.name}; known variants: {list(variants)}"
        )


def apply_overrides(config, overrides: list[tuple[str, str]]):
    """Sets ``config.a.b`` from strings, parsed by the type already there
    (``parse_value``). A new ``data.task`` is set first and brings its own
    keys, at their defaults (``switch_task``), so the other overrides may
    name them."""
    for dotted, text in sorted(overrides, key=lambda o: o[0] != "data.task"):
        *parents, leaf = dotted.split(".")
        node, where = config, "config"
        for name in parents:
            _check_key(node, name, where)
            node, where = node[name], f"{where}.{name}"
        _check_key(node, leaf, where)
        if dotted == "data.task" and text != node[leaf]:
            switch_task(config, text)
            continue
        value = parse_value(f"{where}.{leaf}", text, node[leaf])
        try:
            with config.unlocked():
                node[leaf] = value
        except (TypeError, ValueError):  # ml_collections refuses a change of type
            kind = type(node[leaf]).__name__
            raise ConfigError(f"{where}.{leaf}: expected {kind}, got {text!r}") from None
    return config


def switch_task(config, task: str):
    """``config.data`` for the task ``task``: its own keys at their defaults
    (the keys of the task before are dropped), the common keys
    (``data.batch_size`` and the like) kept."""
    import dataclasses

    import ml_collections

    from recurrent_jax.train.config import DataConfig, data_defaults

    common = {f.name for f in dataclasses.fields(DataConfig)} - {"task", "options"}
    data = data_defaults(task)
    data.update({k: config.data[k] for k in common if k in config.data})
    locked = config.is_locked
    with config.unlocked():
        config.data = ml_collections.ConfigDict(data)
    if locked:
        config.lock()
    return config


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        from recurrent_jax.data.base import MissingExtraError

        raise MissingExtraError(
            f"recurrent-jax train needs {package}: pip install 'recurrent-jax[experiments]'"
        ) from e


def _check_key(node, name, where):
    if not hasattr(node, "keys"):
        raise ConfigError(f"{where}: holds a value, not a section; got the key {name!r}")
    check_keys(where, {name: None}, node.keys())


NONE = ("None", "null")  # an optional key set back to None


def parse_value(key: str, text: str, current):
    """``text`` as the type of ``current``: bool, int, float, str; a list or
    tuple from ``[a, b]`` (items parsed as Python literals, else strings)
    or ``a,b``; ``None`` for any key (its type is checked where the config
    is validated); else a Python literal, falling back to the string."""
    if text.strip() in NONE:
        return None
    try:
        if isinstance(current, bool):
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        if isinstance(current, tuple | list):
            return type(current)(_items(text))
    except ValueError:
        raise ConfigError(f"{key}: expected {type(current).__name__}, got {text!r}") from None
    return _literal(text)


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _items(text: str) -> list:
    """``[a, b]``, ``(a, b)`` or ``a,b`` as a list; bare words are strings."""
    body = text.strip()
    if body[:1] + body[-1:] in ("[]", "()"):
        body = body[1:-1]
    items = _literal(f"[{body}]")
    if isinstance(items, list):
        return items
    return [_literal(item.strip()) for item in body.split(",") if item.strip()]


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separates ``--config.a.b=v`` / ``--config.a.b v`` from the other args."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            name, eq, value = arg[len("--config.") :].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"--config.{name}: expected a value")
                i, value = i + 1, argv[i + 1]
            overrides.append((name, value))
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def description(path: Path) -> str | None:
    """The config file's module docstring, read without running the file."""
    return ast.get_docstring(ast.parse(path.read_text()))


def declared_variants(path: Path) -> list[str]:
    """The config file's ``VARIANTS`` tuple, read without running the file."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "VARIANTS" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return []
