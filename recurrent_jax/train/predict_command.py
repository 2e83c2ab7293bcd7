"""``recurrent-jax predict``: a saved run's predictions for new inputs.

    recurrent-jax predict --workdir=RUN --input=new.npz --output=preds.csv
    recurrent-jax predict --workdir=RUN --input=a.txt --input=b.txt      # a text task
    recurrent-jax predict --workdir=RUN --source="123+45" --method=beam --beam-size=4
    recurrent-jax predict --workdir=RUN --input=sources.txt --output=decoded.csv  # seq2seq
    recurrent-jax predict --workdir=RUN --prompt="To be" --temperature=0.8 --top-k=5

Inputs are read as the run's data was (``train.predict``); the run is
loaded through the checks of every command (``train.loaded.load_run``).
Without ``--output`` the predictions are printed as CSV.
"""

from __future__ import annotations

import json
from pathlib import Path

from recurrent_jax.train import predict
from recurrent_jax.train.config import ConfigError
from recurrent_jax.train.loaded import load_run


def run_predict(args) -> int:
    """``recurrent-jax predict``: ``args`` as the command line parses them;
    the exit status."""
    what, options = predict_options(args)
    run = load_run(Path(args.workdir), args.run, args.step, trust_code=args.trust_code)
    if what == "prompt":
        length = options.pop("length", 200)
        text = run.sample(args.prompt, length, seed=args.seed, **options)
        if args.output:
            Path(args.output).write_text(text + "\n")
        print(text)
        return 0
    if args.method != "greedy":  # a seq2seq run's decoder (the default is greedy)
        options["method"] = args.method
    if args.method == "sample":
        import jax

        options["key"] = jax.random.key(args.seed)
    if what == "source":
        predictions = run.predict(args.source, **options)
    else:
        inputs = predict.read_inputs(run, args.input)
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        predictions = run.predict(*inputs, **options)
    if args.output:
        path = predict.write_predictions(predictions, args.output)
        shapes = {k: list(v.shape) for k, v in predictions.items()}
        print(json.dumps({"workdir": args.workdir, "step": run.step, "output": str(path)} | shapes))
    else:
        header, rows = predict.csv_rows(predictions)
        print("\n".join(",".join(map(str, row)) for row in [header, *rows]))
    return 0


def predict_options(args) -> tuple[str, dict]:
    """Which of ``--input``, ``--source``, ``--prompt`` was given (exactly
    one) and the options given for it; a flag of another is an error."""
    given = [name for name in ("input", "source", "prompt") if getattr(args, name)]
    if len(given) != 1:
        raise ConfigError(f"--input, --source, --prompt: expected exactly one, got {given}")
    what = given[0]
    applies = {
        "prompt": ("length", "temperature", "top_k"),
        "source": {"sample": ("temperature", "top_k"), "beam": ("beam_size", "length_penalty")},
    }
    allowed = applies.get("source" if what == "input" else what, ())
    if what != "prompt":  # sources given, or a file of them (a seq2seq run)
        allowed = allowed.get(args.method, ())
    elif args.method != "greedy":
        raise ConfigError(f"--method: decodes a seq2seq run's sources, not --{what}")
    flags = ("length", "temperature", "top_k", "beam_size", "length_penalty")
    options = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
    for name in options:
        if name not in allowed:
            decoding = what == "source" or (what == "input" and args.method != "greedy")
            where = f"--method={args.method}" if decoding else f"--{what}"
            raise ConfigError(f"--{name.replace('_', '-')}: not an option of {where}")
    return what, options
