"""The ``sweep`` section of a config, parsed into runs and grid points.

See ``recurrent_jax.sweep`` for the syntax. ``parse_sweep(config_dict)``
returns a ``SweepPlan``: every run's full, validated ``ExperimentConfig``
(so run *i* can be re-run alone with ``recurrent-jax train``), grouped by
grid point (runs that share one compiled program). A sweep has at most
``MAX_RUNS`` runs, checked before any axis or run is built.

It lives in ``train``, below the sweep layer, because the reader of every
run (``train.eval_run.restore_run``) parses a sweep's ``sweep.json`` to find
run *i*, its grid point and its place there.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from recurrent_jax.train import hparams
from recurrent_jax.train.config import (
    SECTIONS,
    ConfigError,
    ExperimentConfig,
    from_config_dict,
    to_dict,
)
from recurrent_jax.train.config_files import parse_value

SWEEP_KEYS = ("vmap", "grid", "seeds", "zip", "runs_per_call")
# Sections whose keys the config does not list: each run's config checks them
# (``model.cell_options``: named by the cell's constructor).
OPEN_SECTIONS = ("model.cell_options",)
MAX_RUNS = 10_000  # runs of one sweep (each holds its whole config); more: several sweeps
AXIS_FORMS = (
    "a list, {'log': [lo, hi], 'num': n}, {'linear': [lo, hi], 'num': n} "
    "or {'range': [start, stop(, step)]}"
)


def default_section() -> dict:
    """An empty sweep: one run per config, at ``training.seed``."""
    return {"vmap": {}, "grid": {}, "seeds": 1, "zip": [], "runs_per_call": 0}


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its id, grid point, seed, swept values and whole config."""

    run_id: int
    point: int  # index of its grid point
    seed: int
    values: dict  # swept name -> value, grid paths and vmap names
    config: ExperimentConfig  # the whole config of this run alone


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """Runs that share one compiled program (the same static values)."""

    index: int
    grid: dict  # grid path -> value
    config: ExperimentConfig  # compiled for all its runs (see ``parse_sweep``)
    runs: tuple[Run, ...]


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A parsed sweep section: its axes, seeds, grid points and runs."""

    base: ExperimentConfig
    section: dict  # the sweep section as given (saved with the sweep)
    vmap: tuple[str, ...]  # traced hyperparameters, ``HParams`` field names
    grid: tuple[str, ...]  # static config paths ("model.hidden_size")
    axes: dict  # swept name -> values (seeds excluded)
    seeds: tuple[int, ...]
    points: tuple[GridPoint, ...]
    runs: tuple[Run, ...]
    runs_per_call: int  # runs per vmapped call; 0 picks it from memory

    @property
    def swept(self) -> tuple[str, ...]:
        return self.grid + self.vmap


# --- axes -----------------------------------------------------------------------


def parse_axis(where: str, axis) -> list:
    """An axis's values: a list, or a log / linear range, or a ``range``."""
    if isinstance(axis, list | tuple):
        _check_count(where, len(axis))
        values = list(axis)
    elif isinstance(axis, Mapping):
        values = _range_axis(where, dict(axis))
    else:
        raise ConfigError(f"{where}: expected {AXIS_FORMS}, got {axis!r}")
    if not values:
        raise ConfigError(f"{where}: expected at least one value, got an empty axis")
    return [_plain(v) for v in values]


def _range_axis(where: str, axis: dict) -> list:
    forms = [k for k in ("log", "linear", "range") if k in axis]
    unknown = sorted(set(axis) - {"log", "linear", "range", "num"})
    if len(forms) != 1 or unknown:
        raise ConfigError(f"{where}: expected {AXIS_FORMS}, got {axis!r}")
    form, bounds = forms[0], axis[forms[0]]
    if not isinstance(bounds, list | tuple) or not all(_is_number(b) for b in bounds):
        raise ConfigError(f"{where}.{form}: expected a list of numbers, got {bounds!r}")
    if form == "range":
        if not 1 <= len(bounds) <= 3 or "num" in axis:
            raise ConfigError(
                f"{where}.range: expected [stop], [start, stop] or [start, stop, step]"
            )
        start, stop, step = ([0, *bounds, 1] if len(bounds) == 1 else [*bounds, 1])[:3]
        if step == 0:
            raise ConfigError(f"{where}.range: expected a step other than 0, got {bounds!r}")
        _check_count(where, max(0, math.ceil((stop - start) / step)))
        if all(isinstance(b, int) for b in bounds):
            return list(range(*bounds))
        return [float(v) for v in np.arange(*bounds)]
    num = axis.get("num")
    if len(bounds) != 2 or not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise ConfigError(f"{where}: expected {{'{form}': [lo, hi], 'num': n >= 1}}, got {axis!r}")
    _check_count(where, num)
    if form == "log":
        if not (bounds[0] > 0 and bounds[1] > 0):
            raise ConfigError(f"{where}.log: expected positive bounds, got {bounds!r}")
        return [float(v) for v in np.geomspace(bounds[0], bounds[1], num)]
    return [float(v) for v in np.linspace(bounds[0], bounds[1], num)]


def _check_count(where: str, count: int, what: str = "values") -> None:
    if count > MAX_RUNS:
        raise ConfigError(
            f"{where}: expected at most {MAX_RUNS} {what} (a sweep runs at most {MAX_RUNS} "
            f"runs; split it into several sweeps), got {count}"
        )


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(value):
    """Floats rounded to 12 significant digits (``np.geomspace`` noise)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.12g}")
    return value


# --- names ----------------------------------------------------------------------


def vmap_name(where: str, name: str, base: dict) -> str:
    """The ``HParams`` field a ``sweep.vmap`` key names (a field name or its
    config path); a static value is an error that says to use ``grid``."""
    by_path = {path: field for field, path in hparams.PATHS.items()}
    if name in hparams.PATHS:
        return name
    if name in by_path:
        return by_path[name]
    path = name if "." in name else _static_path(name, base)
    section, _, field = path.partition(".")
    if path and section in base and field in base[section]:
        raise ConfigError(
            f"{where}: config.{path} is static (it changes shapes or structure, or is "
            f"read on the host), so it cannot be vmapped; put it in sweep.grid: "
            f"{{'{section}': {{'{field}': [...]}}}}"
        )
    raise ConfigError(
        f"{where}: unknown hyperparameter {name!r}; vmappable: {sorted(hparams.PATHS)}"
    )


def _static_path(field: str, base: dict) -> str:
    return next((f"{s}.{field}" for s in SECTIONS if field in base.get(s, {})), "")


def flatten_grid(grid: Mapping, base: dict) -> dict:
    """``{section: {field: axis}}`` -> ``{"section.field": values}``; a field
    that is itself a section (``model.engine``) nests: ``"model.engine.impl"``."""
    out = {}
    for section, fields in grid.items():
        where = f"config.sweep.grid.{section}"
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section; valid: {sorted(SECTIONS)}")
        out.update(_flatten_fields(where, section, fields, base[section]))
    return out


def _flatten_fields(where: str, path: str, fields, base: Mapping) -> dict:
    if not isinstance(fields, Mapping):
        raise ConfigError(f"{where}: expected {{field: axis}}, got {fields!r}")
    out = {}
    for field, axis in fields.items():
        if field not in base and path not in OPEN_SECTIONS:
            raise ConfigError(f"{where}.{field}: unknown key; valid keys: {sorted(base)}")
        if path == "training" and field == "seed":
            raise ConfigError(f"{where}.{field}: use sweep.seeds for seeds")
        if isinstance(base.get(field), Mapping) and isinstance(axis, Mapping):
            nested = _flatten_fields(f"{where}.{field}", f"{path}.{field}", axis, base[field])
            out.update(nested)
        else:
            out[f"{path}.{field}"] = parse_axis(f"{where}.{field}", axis)
    return out


def flatten_vmap(vmap: Mapping, base: dict) -> dict:
    """``{name: axis}`` (or ``{section: {field: axis}}``) -> ``{field: values}``."""
    out = {}
    for name, axis in vmap.items():
        where = f"config.sweep.vmap.{name}"
        if name in SECTIONS and isinstance(axis, Mapping) and not _looks_like_range(axis):
            nested = flatten_vmap({f"{name}.{k}": v for k, v in axis.items()}, base)
            out.update(nested)
            continue
        field = vmap_name(where, name, base)
        if field in out:
            raise ConfigError(f"{where}: {field} is swept twice")
        out[field] = parse_axis(where, axis)
    return out


def _looks_like_range(axis: Mapping) -> bool:
    return bool({"log", "linear", "range"} & set(axis))


# --- the plan -------------------------------------------------------------------


def parse_sweep(cfg) -> SweepPlan:
    """The ``SweepPlan`` of a config dict with a ``sweep`` section (absent: one run).

    Runs are the product of the axis groups (grid axes outermost, then
    vmapped ones, seeds innermost; a ``zip`` group counts as one axis), so
    run ids follow that order.
    """
    raw = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    section = {**default_section(), **(raw.pop("sweep", None) or {})}
    base = from_config_dict(raw)
    base_dict = to_dict(base)
    unknown = sorted(set(section) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"config.sweep: unknown key(s) {unknown}; valid keys: {list(SWEEP_KEYS)}")
    grid = flatten_grid(section["grid"] or {}, base_dict)
    vmap = flatten_vmap(section["vmap"] or {}, base_dict)
    seeds = _seeds(section["seeds"], base.training.seed)
    runs_per_call = section["runs_per_call"]
    if not isinstance(runs_per_call, int) or isinstance(runs_per_call, bool) or runs_per_call < 0:
        raise ConfigError(
            "config.sweep.runs_per_call: expected an int >= 0 (0: from memory), "
            f"got {runs_per_call!r}"
        )
    axes = grid | vmap
    groups = _groups(section["zip"] or [], axes)
    runs = math.prod(len(axes[group[0]]) for group in groups) * len(seeds)
    _check_count("config.sweep", runs, "runs")
    runs = _runs(base_dict, grid, vmap, groups, seeds)
    points = _points(runs, tuple(grid), tuple(vmap))
    return SweepPlan(
        base=base,
        section=section,
        vmap=tuple(vmap),
        grid=tuple(grid),
        axes=axes,
        seeds=tuple(seeds),
        points=points,
        runs=tuple(r for p in points for r in p.runs),
        runs_per_call=runs_per_call,
    )


def _seeds(seeds, first: int) -> list[int]:
    where = "config.sweep.seeds"
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"{where}: expected a count >= 1 or a list of seeds, got {seeds}")
        _check_count(where, seeds)
        return list(range(first, first + seeds))
    if isinstance(seeds, list | tuple) and seeds:
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ConfigError(f"{where}: expected non-negative ints, got {list(seeds)!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"{where}: expected distinct seeds, got {list(seeds)!r}")
        return list(seeds)
    raise ConfigError(f"{where}: expected a count >= 1 or a list of seeds, got {seeds!r}")


def _groups(zips, axes: dict) -> list[tuple[str, ...]]:
    """Axis groups in order: each ``zip`` group at its first member's place."""
    aliases = {path: field for field, path in hparams.PATHS.items()}
    member = {}
    for i, group in enumerate(zips):
        where = f"config.sweep.zip[{i}]"
        if not isinstance(group, list | tuple) or len(group) < 2:
            raise ConfigError(f"{where}: expected a list of two or more swept names, got {group!r}")
        # A traced hyperparameter's config path names its vmap axis; in the
        # grid the path itself is the axis.
        names = [n if n in axes else aliases.get(n, n) for n in group]
        for name in names:
            if name not in axes:
                raise ConfigError(f"{where}: {name!r} is not swept; swept: {list(axes)}")
            if name in member:
                raise ConfigError(f"{where}: {name!r} is already in another zip group")
            member[name] = tuple(names)
        lengths = {n: len(axes[n]) for n in names}
        if len(set(lengths.values())) != 1:
            raise ConfigError(f"{where}: zipped axes need equal lengths, got {lengths}")
    groups = []
    for name in axes:
        group = member.get(name, (name,))
        if group not in groups:
            groups.append(group)
    return groups


def _runs(base_dict, grid, vmap, groups, seeds) -> list[Run]:
    axes = grid | vmap
    choices = [
        [dict(zip(g, vs, strict=True)) for vs in zip(*(axes[n] for n in g), strict=True)]
        for g in groups
    ]
    runs = []
    for combo in itertools.product(*choices, seeds):
        *parts, seed = combo
        values = {name: v for part in parts for name, v in part.items()}
        values = {name: values[name] for name in axes}  # axis order
        config = _run_config(base_dict, values, seed, len(runs))
        runs.append(Run(len(runs), -1, seed, values, config))
    return runs


def _run_config(base_dict: dict, values: dict, seed: int, run_id: int) -> ExperimentConfig:
    tree = copy.deepcopy(base_dict)
    for name, value in values.items():
        *parents, field = hparams.PATHS.get(name, name).split(".")
        functools.reduce(dict.__getitem__, parents, tree)[field] = value
    tree["training"]["seed"] = seed
    try:
        return from_config_dict(tree)
    except ConfigError as e:
        raise ConfigError(f"config.sweep: run {run_id} ({values}, seed {seed}): {e}") from None


def _points(runs: list[Run], grid: tuple, vmap: tuple) -> tuple[GridPoint, ...]:
    by_grid: dict[tuple, list[Run]] = {}
    for run in runs:
        by_grid.setdefault(tuple(repr(run.values[p]) for p in grid), []).append(run)
    points, next_id = [], 0
    for index, members in enumerate(by_grid.values()):
        members = [
            dataclasses.replace(r, run_id=next_id + i, point=index) for i, r in enumerate(members)
        ]
        next_id += len(members)
        grid_values = {p: members[0].values[p] for p in grid}
        points.append(GridPoint(index, grid_values, _point_config(members, vmap), tuple(members)))
    return tuple(points)


def _point_config(runs: list[Run], vmap: tuple) -> ExperimentConfig:
    """The config compiled for a grid point: its first run's, with each
    vmapped value replaced by a non-zero one of the point where there is one,
    so every regulariser any run uses is compiled in (a rate of 0 in a
    compiled-in regulariser is the identity)."""
    config = runs[0].config
    for name in vmap:
        values = [r.values[name] for r in runs]
        path = hparams.PATHS[name]
        if hparams.BY_NAME[name].zero_disables and 0 in values and any(values):
            raise ConfigError(
                f"config.sweep.vmap.{name}: 0 turns it off, a static choice that cannot "
                f"share a program with {name} > 0; vmap positive values, or put {path} "
                "in sweep.grid"
            )
        section, field = hparams.PATHS[name].split(".")
        chosen = next((v for v in values if v), values[0])
        part = dataclasses.replace(getattr(config, section), **{field: chosen})
        config = dataclasses.replace(config, **{section: part})
    return config


def point_checkpoints(workdir, point: int) -> Path:
    """The checkpoint directory of grid point ``point`` of the sweep in ``workdir``."""
    return Path(workdir) / "checkpoints" / f"point-{point}"


def apply_sweep_overrides(config: dict, overrides: list[tuple[str, str]]) -> dict:
    """Sets ``sweep.a.b`` in a config dict from Python literals (``[1, 2]``,
    ``{'log': [1e-4, 1e-1], 'num': 4}``, ``3``); keys under ``sweep.vmap``
    and ``sweep.grid`` may be new."""
    config["sweep"] = {**default_section(), **(config.get("sweep") or {})}
    for dotted, text in overrides:
        *parents, leaf = dotted.split(".")
        node = config
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config.{dotted}: {name!r} holds a value, not a section")
        node[leaf] = parse_value(f"config.{dotted}", text, None)
    return config
