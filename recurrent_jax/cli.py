"""The ``recurrent-jax`` command line.

    recurrent-jax                                   # trains configs/adding.py
    recurrent-jax train --config=configs/adding.py[:smoke] [--workdir=DIR] [--config.a.b=v ...]
    recurrent-jax train --workdir=DIR               # resumes the run saved there
    recurrent-jax eval --workdir=DIR [--step=best|latest|N]
    recurrent-jax list                              # configs and tasks

A config is ``configs/<name>.py`` (``get_config(arg)`` returning an
ml_collections ConfigDict), a bare name (``adding``) looked up in
``configs/``, or a run's saved ``config.json``.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import json
import sys
from pathlib import Path

from recurrent_jax.data.options import ConfigError

DEFAULT_CONFIG = "adding"


# --- configs --------------------------------------------------------------------------


def configs_dirs() -> list[Path]:
    """Where bare config names are looked up: ./configs, then the repository's."""
    repo = Path(__file__).resolve().parents[1] / "configs"
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
    if path.suffix == ".json":
        config = ml_collections.ConfigDict(json.loads(path.read_text()))
    else:
        module_spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path}: expected a function get_config(arg=None)")
        config = module.get_config(arg) if arg is not None else module.get_config()
    config.lock()
    return config


def apply_overrides(config, overrides: list[tuple[str, str]]):
    """Sets ``config.a.b`` from strings, parsed by the type already there."""
    for dotted, text in overrides:
        *parents, leaf = dotted.split(".")
        node, where = config, "config"
        for name in parents:
            _check_key(node, name, where)
            node, where = node[name], f"{where}.{name}"
        _check_key(node, leaf, where)
        value = parse_value(f"{where}.{leaf}", text, node[leaf])
        with config.unlocked():
            node[leaf] = value
    return config


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        from recurrent_jax.data.base import MissingExtraError

        raise MissingExtraError(
            f"recurrent-jax train needs {package}: pip install 'recurrent-jax[experiments]'"
        ) from e


def _check_key(node, name, where):
    if not hasattr(node, "keys") or name not in node:
        valid = sorted(node.keys()) if hasattr(node, "keys") else []
        raise ConfigError(f"{where}.{name}: unknown key; valid keys in {where}: {valid}")


def parse_value(key: str, text: str, current):
    """``text`` as the type of ``current`` (bool, int, float, str; else a
    Python literal, falling back to the string)."""
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
    except ValueError:
        raise ConfigError(f"{key}: expected {type(current).__name__}, got {text!r}") from None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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


# --- subcommands ----------------------------------------------------------------------


def cmd_train(args, overrides) -> int:
    from recurrent_jax.train.config import from_config_dict
    from recurrent_jax.train.loop import train_and_evaluate
    from recurrent_jax.train.summary import format_summary

    if args.config is None and args.workdir and (Path(args.workdir) / "config.json").exists():
        config = load_config(str(Path(args.workdir) / "config.json"))
    else:
        config = load_config(args.config or DEFAULT_CONFIG)
    experiment = from_config_dict(apply_overrides(config, overrides))
    workdir = Path(args.workdir or default_workdir(experiment.name, args.config))
    print(f"workdir: {workdir}  (resume: recurrent-jax train --workdir={workdir})", flush=True)
    summary = train_and_evaluate(experiment, workdir, progress=not args.no_progress)
    print(format_summary(summary))
    return 0 if summary["status"] == "completed" else 130


def default_workdir(name: str, spec: str | None) -> Path:
    variant = (spec or "").partition(":")[2]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}{'-' + variant if variant else ''}-{stamp}"


def cmd_eval(args, overrides) -> int:
    from recurrent_jax.train.evaluate import evaluate_run

    report = evaluate_run(Path(args.workdir), args.step)
    print(json.dumps(report, indent=2))
    return 0


def cmd_list(args, overrides) -> int:
    from recurrent_jax.data import tasks

    print("configs:")
    for d in configs_dirs():
        for path in sorted(d.glob("*.py")):
            doc = [line for line in (_docstring(path) or "").splitlines() if line.strip()]
            print(f"  {path.stem:18s} {doc[0] if doc else ''}")
            if len(doc) > 1:
                print(f"  {'':18s}   {doc[1].strip()}")
    print("tasks:")
    for task in tasks():
        extra = f" [needs {task.extra}]" if task.extra else ""
        print(f"  {task.name:8s} {task.pattern}: {task.description}{extra}")
    return 0


def _docstring(path: Path) -> str | None:
    return ast.get_docstring(ast.parse(path.read_text()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recurrent-jax", description="Train and evaluate recurrent networks in JAX."
    )
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train", help="train from a config (resumes a --workdir)")
    train.add_argument("--config", help="configs/<name>.py[:variant], a name, or a config.json")
    train.add_argument("--workdir", help="run directory (default runs/<name>-<time>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    evaluate = sub.add_parser("eval", help="reload a run's best checkpoint and report")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--step", default="best", help="best, latest or a step number")
    sub.add_parser("list", help="list configs and tasks")
    return parser


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "list": cmd_list}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        rest, overrides = split_overrides(argv)
        if not rest or (rest[0] not in COMMANDS and rest[0] not in ("-h", "--help")):
            rest = ["train", *rest]
        args = parser.parse_args(rest)
        if overrides and args.command != "train":
            parser.error("--config.* overrides apply to `train` only")
        return COMMANDS[args.command](args, overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"recurrent-jax: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from recurrent_jax.data.base import DataError, MissingExtraError
        from recurrent_jax.train.checkpoint import CheckpointError
        from recurrent_jax.train.loop import TrainingDiverged

        if isinstance(e, DataError | MissingExtraError | CheckpointError | TrainingDiverged):
            print(f"recurrent-jax: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
