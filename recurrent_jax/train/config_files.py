"""Experiment config files: loading, ``:variant`` resolution and overrides.

A config is ``configs/<name>.py`` (``get_config(arg)`` returning an
ml_collections ConfigDict, and optionally ``VARIANTS``, the accepted
``arg`` values), a bare name (``adding``) looked up in ``configs/``, or a
run's saved ``config.json``. A ``.py`` config is a program you run, its own
code and the modules beside it included; a JSON config names code only as
data, imported only when trusted if it lies outside the package
(``trust_code``, ``references.admit_code``). Relative data paths in a
config file are relative to its folder (``references``)::

    config = load_config("adding:smoke")
    rest, overrides = split_overrides(["--workdir=x", "--config.model.hidden_size=64"])
    apply_overrides(config, overrides)   # parsed by the type already there

The sweep's dialect (``--config.sweep.*``, new keys allowed) is
``recurrent_jax.train.sweep_spec.apply_sweep_overrides``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import json
from pathlib import Path

from recurrent_jax import _imports
from recurrent_jax.train import references
from recurrent_jax.train.config import ConfigError, check_keys, config_errors

DEFAULT_CONFIG = "adding"
MAX_DEPTH = 32  # levels of nesting in a config: a section, a field, a sweep axis...


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


def load_config(spec: str, *, trust_code: bool = False):
    """The locked ConfigDict of ``path[:arg]``: a .py config, or a .json
    (a saved ``config.json`` or ``sweep.json``) whose code is imported from
    the files it recorded (else found on ``sys.path``), and outside the
    package only with ``trust_code``. Its relative data paths are made
    absolute against the file's folder."""
    ml_collections = _require("ml_collections", "ml-collections")

    path, arg = resolve_config_path(spec)
    try:
        if path.suffix == ".json":  # a saved config.json or sweep.json
            raw = read_json(path)
            with config_errors(""):
                source = f"the config {path}"
                references.admit_code(raw, source=source, trust=trust_code, search=False)
            config = ml_collections.ConfigDict(raw)
        else:
            config = _run_config_file(path, arg)
            check_depth(str(path), config.to_dict())
        resolve_file_paths(config, path.parent)
    except RecursionError:
        raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep") from None
    config.lock()
    return config


def _run_config_file(path: Path, arg: str | None):
    _imports.add_search_path(path.parent)  # its own tasks and cells, by import path
    module_spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: expected a function get_config(arg=None)")
    check_variant(path, arg, getattr(module, "VARIANTS", None))
    return module.get_config(arg) if arg is not None else module.get_config()


def read_json(path: Path) -> dict:
    """A JSON config file as a dict of at most ``MAX_DEPTH`` levels."""
    try:
        raw = json.loads(path.read_text())
    except RecursionError:
        raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a JSON config ({error})") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a JSON object of config sections, got {type(raw).__name__}"
        )
    check_depth(str(path), raw)
    return raw


def check_depth(where: str, tree) -> None:
    """A ConfigError when ``tree`` (dicts and lists) nests more than
    ``MAX_DEPTH`` levels (checked without recursion)."""
    level = [tree]
    for _ in range(MAX_DEPTH + 1):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list | tuple)
        ]
        if not level:
            return
    raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep")


def resolve_file_paths(config, folder: Path) -> None:
    """The relative data paths of a config file, and those swept in its
    ``sweep.grid``, made absolute against the file's ``folder``."""
    from recurrent_jax.data import registry

    data = config.get("data")
    try:
        options = registry.get_task(data.get("task")).options
    except (AttributeError, TypeError, ValueError):
        return  # no or an unknown task: from_config_dict names it
    resolved = references.resolve_paths(data, options, folder)
    unlocked = config.unlocked() if hasattr(config, "unlocked") else contextlib.nullcontext()
    with unlocked:
        for name, value in resolved.items():
            if value != data[name]:
                data[name] = value
        if config.get("sweep") is not None:
            references.resolve_grid_paths(config.sweep, options, folder)


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
        if where not in OPEN_SECTIONS:  # their keys are checked with the section
            _check_key(node, leaf, where)
        if dotted == "data.task" and text != node[leaf]:
            switch_task(config, text)
            continue
        value = parse_value(f"{where}.{leaf}", text, node.get(leaf))
        try:
            with config.unlocked():
                node[leaf] = value
        except (TypeError, ValueError):  # ml_collections refuses a change of type
            kind = type(node.get(leaf)).__name__
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


OPEN_SECTIONS = ("config.model.cell_options",)  # a cell's own options, any name
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
