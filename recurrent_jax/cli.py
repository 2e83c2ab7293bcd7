"""The ``recurrent-jax`` command line.

    recurrent-jax                                   # trains configs/adding.py
    recurrent-jax train --config=configs/adding.py[:smoke] [--workdir=DIR] [--config.a.b=v ...]
    recurrent-jax train --workdir=DIR               # resumes the run saved there
    recurrent-jax train ... [--mesh.data=M]         # the run's batch over M devices
    recurrent-jax eval --workdir=DIR [--run=I] [--step=best|latest|N] [--trust-code]
    recurrent-jax decode --workdir=DIR [--method=greedy|sample|beam] [--beam-size=K] [--source=S]
    recurrent-jax predict --workdir=DIR --input=new.npz|.csv|.parquet|text.txt [--output=p.csv]
    recurrent-jax predict --workdir=DIR --prompt="To be" [--length=N] [--temperature=T] [--top-k=K]
    recurrent-jax sweep --config=configs/adding_sweep.py[:smoke] [--workdir=DIR] [--config.sweep...]
    recurrent-jax sweep --workdir=DIR               # resumes the sweep saved there
    recurrent-jax sweep ... [--mesh.runs=N] [--mesh.data=M] [--distributed]   # devices, hosts
    recurrent-jax list                              # configs and tasks

Config files, ``:variant`` and ``--config.a.b=v`` overrides:
``recurrent_jax.train.config_files``; which command may use which
directory: ``recurrent_jax.train.rundir``; this module is argparse and
dispatch. ``--trust-code``: a saved run (or JSON config) that names code
outside the package runs it only with this flag
(docs/guides/run-directories.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from recurrent_jax import __version__
from recurrent_jax.train.config import ConfigError
from recurrent_jax.train.config_files import (
    DEFAULT_CONFIG,
    apply_overrides,
    configs_dirs,
    declared_variants,
    description,
    load_config,
    split_overrides,
)

# --- subcommands ----------------------------------------------------------------------


def cmd_train(args, overrides) -> int:
    from recurrent_jax.train import rundir
    from recurrent_jax.train.config import from_config_dict
    from recurrent_jax.train.loop import train_and_evaluate
    from recurrent_jax.train.summary import format_run_summary

    if args.mesh_runs not in (None, 1):  # more would train copies of the one run
        raise ConfigError(
            f"--mesh.runs: expected 1 for a training run (a sweep spreads runs over "
            f"devices; --mesh.data splits the run's batch), got {args.mesh_runs}"
        )
    marker = rundir.check(args.workdir, "train") if args.workdir else None
    saved = Path(args.workdir or ".") / rundir.CONFIG_FILE
    if args.config is None and marker is not None:
        if not saved.is_file():
            raise ConfigError(f"--workdir: {args.workdir} holds no {saved.name}; pass --config")
        config = load_config(str(saved), trust_code=args.trust_code)
    else:
        config = load_config(args.config or DEFAULT_CONFIG, trust_code=args.trust_code)
    experiment = from_config_dict(apply_overrides(config, overrides))
    workdir = Path(args.workdir or default_workdir(experiment.name, args.config))
    print(f"workdir: {workdir}  (resume: recurrent-jax train --workdir={workdir})", flush=True)
    given = args.mesh_runs is not None or args.mesh_data is not None
    mesh = sweep_mesh(1, args.mesh_data) if given else None
    summary = train_and_evaluate(experiment, workdir, progress=not args.no_progress, mesh=mesh)
    print(format_run_summary(summary))
    return 0 if summary["status"] == "completed" else 130


def default_workdir(name: str, spec: str | None) -> Path:
    variant = (spec or "").partition(":")[2]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}{'-' + variant if variant else ''}-{stamp}"


def cmd_eval(args, overrides) -> int:
    from recurrent_jax.train.eval_run import evaluate_run

    report = evaluate_run(Path(args.workdir), args.step, run=args.run, trust_code=args.trust_code)
    print(json.dumps(report, indent=2))
    return 0


def cmd_decode(args, overrides) -> int:
    """Decodes a saved seq2seq run with the chosen decoder."""
    from recurrent_jax.train.decode import decode_run, print_report

    options = {
        "beam_size": args.beam_size,
        "length_penalty": args.length_penalty,
        "coverage_penalty": args.coverage_penalty,
        "temperature": args.temperature,
        "top_k": args.top_k,
    }
    allowed = {"beam": ("beam_size", "length_penalty", "coverage_penalty")}
    allowed["sample"] = ("temperature", "top_k")
    given = {k: v for k, v in options.items() if v is not None}
    for name in given:
        if name not in allowed.get(args.method, ()):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}: not an option of --method={args.method}")
    report = decode_run(
        Path(args.workdir),
        run=args.run,
        method=args.method,
        step=args.step,
        sources=args.source,
        num_samples=args.num_samples,
        seed=args.seed,
        trust_code=args.trust_code,
        **given,
    )
    print_report(report)
    return 0


def cmd_predict(args, overrides) -> int:
    """Predictions of a saved run for new inputs, or a language model's
    continuation of ``--prompt`` (``recurrent_jax.train.predict_command``)."""
    from recurrent_jax.train.predict_command import run_predict

    return run_predict(args)


def cmd_sweep(args, overrides) -> int:
    """Runs the config's ``sweep`` section (``recurrent_jax.sweep``)."""
    from recurrent_jax import distributed as dist

    if args.distributed or any(name in os.environ for name in DISTRIBUTED_ENV):
        index, count = dist.initialize()  # before any other JAX work
        print(f"process {index} of {count}", flush=True)
    from recurrent_jax.sweep import enable_compilation_cache, format_sweep_summary, parse_sweep
    from recurrent_jax.sweep.loop import SWEEP_FILE, run_sweep
    from recurrent_jax.train import rundir
    from recurrent_jax.train.sweep_spec import apply_sweep_overrides

    marker = rundir.check(args.workdir, "sweep") if args.workdir else None
    saved = Path(args.workdir or ".") / SWEEP_FILE
    if args.config is None and marker is not None and saved.is_file():
        config = load_config(str(saved), trust_code=args.trust_code)
    elif args.config is None:
        raise ConfigError("--config: expected a config with a sweep, or a sweep's --workdir")
    else:
        config = load_config(args.config, trust_code=args.trust_code)
    sweep_overrides = [(k, v) for k, v in overrides if k.split(".")[0] == "sweep"]
    config = apply_overrides(config, [o for o in overrides if o not in sweep_overrides]).to_dict()
    if args.runs_per_call is not None:
        sweep_overrides.append(("sweep.runs_per_call", str(args.runs_per_call)))
    plan = parse_sweep(apply_sweep_overrides(config, sweep_overrides))
    if args.compilation_cache != "none":
        cache = enable_compilation_cache(args.compilation_cache)
        print(f"compilation cache: {cache}", flush=True)
    if args.workdir is None and dist.jax.process_count() > 1:
        raise ConfigError("--workdir: expected a directory all the processes share")
    workdir = Path(args.workdir or default_workdir(f"{plan.base.name}-sweep", args.config))
    print(f"workdir: {workdir}  (resume: recurrent-jax sweep --workdir={workdir})", flush=True)
    mesh = sweep_mesh(args.mesh_runs, args.mesh_data)
    summary = run_sweep(plan, workdir, progress=not args.no_progress, mesh=mesh, log=print)
    print(format_sweep_summary(summary))
    return 0 if summary["status"] == "completed" else 130


DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES")


def sweep_mesh(runs: int | None, data: int | None):
    """This process's ``(runs, data)`` mesh: ``runs * data`` of its devices
    (default: all of them on ``runs``); None for one device."""
    import jax

    from recurrent_jax import distributed as dist

    devices = jax.local_devices()
    data = 1 if data is None else data
    if runs is None and data == 1 and len(devices) == 1:
        return None
    if data < 1 or (runs is not None and runs < 1):
        raise ConfigError(f"--mesh.runs, --mesh.data: expected sizes >= 1, got {runs}, {data}")
    runs = len(devices) // data if runs is None else runs
    if runs * data > len(devices) or runs * data == 0:
        raise ConfigError(
            f"--mesh.runs={runs} x --mesh.data={data}: expected at most the "
            f"{len(devices)} local devices (and at least 1)"
        )
    return dist.make_mesh(runs, data, devices=devices[: runs * data])


def cmd_list(args, overrides) -> int:
    from recurrent_jax.data import tasks

    print("configs:")
    for d in configs_dirs():
        for path in sorted(d.glob("*.py")):
            doc = [line for line in (description(path) or "").splitlines() if line.strip()]
            print(f"  {path.stem:18s} {doc[0] if doc else ''}")
            for line in doc[1:]:
                print(f"  {'':18s}   {line.strip()}")
            variants = declared_variants(path)
            if variants:
                print(f"  {'':18s}   variants: {', '.join(f':{v}' for v in variants)}")
    print("tasks:")
    for task in tasks():
        extra = f" [needs {task.extra}]" if task.extra else ""
        print(f"  {task.name:8s} {task.pattern}: {task.description}{extra}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recurrent-jax", description="Train and evaluate recurrent networks in JAX."
    )
    parser.add_argument("--version", action="version", version=f"recurrent-jax {__version__}")
    sub = parser.add_subparsers(dest="command")
    overrides_help = (
        "Any config key can be overridden: --config.a.b=value, e.g. "
        "--config.model.hidden_size=128 --config.model.engine.remat=256 "
        "--config.optimizer.learning_rate=3e-3 (values parse as the key's type)."
    )
    train = sub.add_parser(
        "train", help="train from a config (resumes a --workdir)", epilog=overrides_help
    )
    train.add_argument("--config", help="configs/<name>.py[:variant], a name, or a config.json")
    train.add_argument("--workdir", help="run directory (default runs/<name>-<time>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    evaluate = sub.add_parser("eval", help="reload a run's best checkpoint and report")
    decode = sub.add_parser("decode", help="decode a saved seq2seq run (greedy, sample, beam)")
    for command in (train, evaluate, decode):
        add_trust_code(command)
    for command in (evaluate, decode):
        add_run_choice(command)
    decode.add_argument("--method", default="greedy", choices=["greedy", "sample", "beam"])
    decode.add_argument("--beam-size", type=int, help="beam width (default: the config's, or 4)")
    decode.add_argument("--length-penalty", type=float, help="GNMT length penalty alpha")
    decode.add_argument("--coverage-penalty", type=float, help="GNMT coverage penalty beta")
    decode.add_argument("--temperature", type=float, help="sampling temperature")
    decode.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    decode.add_argument("--seed", type=int, default=0, help="sampling seed")
    decode.add_argument("--source", action="append", help="a source string (repeatable)")
    decode.add_argument("--num-samples", type=int, default=10, help="lines to print")
    add_predict(sub)
    sub.add_parser("list", help="list configs and tasks")
    sweep = sub.add_parser(
        "sweep",
        help="run a config's sweep section (resumes a --workdir)",
        epilog=overrides_help + " Sweep axes: --config.sweep.vmap.learning_rate=\"{'log': "
        "[1e-3, 1e-1], 'num': 5}\", --config.sweep.grid.model.cell=\"['lstm', 'gru']\", "
        "--config.sweep.seeds=3.",
    )
    sweep.add_argument("--config", help="configs/<name>.py[:variant], a name, or a sweep.json")
    sweep.add_argument("--workdir", help="sweep directory (default runs/<name>-sweep-<time>)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    add_trust_code(sweep)
    sweep.add_argument(
        "--sweep.runs_per_call",
        dest="runs_per_call",
        type=int,
        help="runs per vmapped call (0: auto)",
    )
    runs_help = {
        train: "1: a training run is one run (a sweep spreads runs over devices)",
        sweep: "devices the runs are split over (default: all local devices / --mesh.data)",
    }
    for command in (train, sweep):
        command.add_argument("--mesh.runs", dest="mesh_runs", type=int, help=runs_help[command])
        command.add_argument(
            "--mesh.data",
            dest="mesh_data",
            type=int,
            help="devices each run's batch is split over (default 1)",
        )
    sweep.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-host job (jax.distributed.initialize; automatic when "
        "JAX_COORDINATOR_ADDRESS or JAX_NUM_PROCESSES is set): each process trains "
        "its own runs and process 0 merges the run table",
    )
    sweep.add_argument(
        "--compilation-cache",
        default=None,
        help="JAX's persistent compilation cache directory (default ~/.cache/recurrent_jax/jax; "
        "'none' turns it off)",
    )
    return parser


def add_predict(sub) -> None:
    predict = sub.add_parser(
        "predict",
        help="predict with a saved run on new inputs, or continue a prompt",
        description="Predictions of a saved run: --input files (a .npz/.npy/.csv/.parquet of "
        "arrays, or text files), --source strings (seq2seq) or a language model's --prompt.",
    )
    add_run_choice(predict)
    predict.add_argument("--input", action="append", help="a file of inputs (text: repeatable)")
    predict.add_argument("--source", action="append", help="a seq2seq source (repeatable)")
    predict.add_argument("--prompt", help="text a language model continues")
    predict.add_argument("--output", help="preds.npz or preds.csv (a prompt's: a text file)")
    predict.add_argument("--length", type=int, help="symbols sampled after --prompt (200)")
    predict.add_argument("--temperature", type=float, help="sampling temperature (0: argmax)")
    predict.add_argument("--top-k", type=int, help="sample among the k most likely symbols")
    predict.add_argument("--seed", type=int, default=0, help="sampling seed")
    predict.add_argument("--method", default="greedy", choices=["greedy", "sample", "beam"])
    predict.add_argument("--beam-size", type=int, help="beam width (--method=beam)")
    predict.add_argument("--length-penalty", type=float, help="GNMT length penalty alpha")
    add_trust_code(predict)


def add_run_choice(command: argparse.ArgumentParser) -> None:
    command.add_argument("--workdir", required=True, help="a run directory, or a sweep's")
    command.add_argument("--run", type=int, help="run id I of a sweep's --workdir")
    command.add_argument("--step", default="best", help="best, latest or a step number")


def add_trust_code(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--trust-code",
        action="store_true",
        help="import the code outside recurrent_jax that a saved run or a JSON config names "
        "(data.task, model.cell by import path); importing runs it, so only for runs you trust",
    )


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "decode": cmd_decode,
    "predict": cmd_predict,
    "list": cmd_list,
    "sweep": cmd_sweep,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        rest, overrides = split_overrides(argv)
        if not rest or (rest[0] not in COMMANDS and rest[0] not in ("-h", "--help", "--version")):
            rest = ["train", *rest]
        args = parser.parse_args(rest)
        if overrides and args.command not in ("train", "sweep"):
            parser.error("--config.* overrides apply to `train` and `sweep` only")
        return COMMANDS[args.command](args, overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"recurrent-jax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        print("recurrent-jax: interrupted (the checkpoints saved so far are kept)", file=sys.stderr)
        return 130
    except OSError as e:  # the file system: a one-line error naming the path
        where = f"{e.filename}: " if e.filename else ""
        print(f"recurrent-jax: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:
        from recurrent_jax.data.base import DataError, MissingExtraError
        from recurrent_jax.train.checkpoint import CheckpointError
        from recurrent_jax.train.loop import TrainingDiverged

        if isinstance(e, DataError | MissingExtraError | CheckpointError | TrainingDiverged):
            print(f"recurrent-jax: error: {e}", file=sys.stderr)
            return 1
        if str(e).startswith("RESOURCE_EXHAUSTED"):  # XLA: more than the estimate
            print(
                f"recurrent-jax: error: out of device memory ({str(e).splitlines()[0]}); "
                "lower data.batch_size, the model's sizes or the sequence lengths (the "
                "checkpoints saved so far are kept)",
                file=sys.stderr,
            )
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
