"""Typed experiment configs: an ml_collections ConfigDict turned, once, into
frozen dataclasses.

``from_config_dict(cfg)`` is the one boundary where a config file's loose
dict becomes ``ExperimentConfig``: unknown keys, wrong types and impossible
values raise ``ConfigError`` naming the key (``config.model.hidden_size``),
what was expected and what was given.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from recurrent_jax import backends, cells
from recurrent_jax.data.options import ConfigError, fail
from recurrent_jax.data.options import check_choice as _check_choice
from recurrent_jax.data.options import check_non_negative as _check_non_negative
from recurrent_jax.data.options import check_positive as _check_positive
from recurrent_jax.data.options import check_rate as _check_rate
from recurrent_jax.engine import Engine
from recurrent_jax.seq2seq import model as seq2seq_model

OPTIMIZERS = ("adam", "adamw", "sgd")
HEADED_CELLS = ("lstm", "gru", "elman")  # the cells with ``num_heads``
SCHEDULES = ("constant", "warmup_cosine")
ATTENTIONS = ("additive", "dot", "general", "concat", "none")
BRIDGES = ("copy", "linear", "zeros")
FEEDBACKS = ("sample", "argmax")
SAMPLING_SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid")


# --- the sections -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _RecurrentModel:
    """The fields every model kind has: its cells and how they run.

    ``forget_bias``: the LSTM forget-gate bias at init (another value with
    another cell is an error). ``engine``: how the recurrence runs, an
    ``rj.Engine`` (``model.engine.impl``, ``.remat``, ``.unroll``,
    ``.hoist``, ``.chunk_length``, ``.deer_*``); a parallel-in-time
    ``impl`` ("associative", "chunked") needs a cell linear in its carry,
    and a backend that cannot run the model's calls fails at the first
    compile naming why.
    """

    KIND: ClassVar[str]
    CELLS: ClassVar[tuple[str, ...]]

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    engine: Engine = Engine()
    forget_bias: float = 1.0

    def __post_init__(self):
        _check_choice("model.cell", self.cell, self.CELLS)
        _check_positive("model.hidden_size", self.hidden_size)
        _check_positive("model.num_layers", self.num_layers)
        impl = self.engine.impl
        if impl in backends.PARALLEL_IN_TIME and not cells.linear_in_carry(self.cell):
            fail(
                "model.engine.impl", f"a backend other than {impl!r} for the {self.cell} cell", impl
            )
        if self.cell != "lstm" and self.forget_bias != 1.0:
            fail(
                "model.forget_bias",
                f"the default 1.0 (it sets the forget gate of LSTMs; model.cell is {self.cell!r})",
                self.forget_bias,
            )


@dataclasses.dataclass(frozen=True)
class RNNModelConfig(_RecurrentModel):
    """``model.kind="rnn"``: a recurrent stack of ``num_layers`` cells
    (bidirectional when ``bidirectional``) and a linear readout.

    ``dropout`` (between layers), ``input_dropout``, ``recurrent_dropout``
    and ``zoneout`` are compiled in when non-zero here; their values (like
    ``init_scale``, which multiplies every weight matrix at init) are the
    defaults of the traced ``HParams``. The convolutional cells
    ("conv_lstm", "conv_gru", for tasks of frames) take ``kernel_size`` (odd;
    0 for the others) and ``hidden_size`` channels; the readout is then a
    1×1 convolution. ``num_heads`` > 0 makes an LSTM, GRU or Elman cell's
    W_hh block-diagonal (``rj.cells.lstm(num_heads=)``; 0: dense).
    """

    KIND: ClassVar[str] = "rnn"
    CELLS: ClassVar[tuple[str, ...]] = (*cells.REGISTRY, *cells.CONV_REGISTRY)

    dropout: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    init_scale: float = 1.0
    kernel_size: int = 0
    num_heads: int = 0

    def __post_init__(self):
        super().__post_init__()
        _check_non_negative("model.num_heads", self.num_heads)
        if self.num_heads and self.cell not in HEADED_CELLS:
            fail(
                "model.num_heads",
                f"0 for the {self.cell} cell (heads: {HEADED_CELLS})",
                self.num_heads,
            )
        if self.num_heads and self.hidden_size % self.num_heads:
            fail(
                "model.num_heads",
                f"a divisor of model.hidden_size={self.hidden_size}",
                self.num_heads,
            )
        conv = self.cell in cells.CONV_REGISTRY
        if conv and (self.kernel_size < 1 or self.kernel_size % 2 == 0):
            fail(
                "model.kernel_size", f"an odd size >= 1 for the {self.cell} cell", self.kernel_size
            )
        if not conv and self.kernel_size:
            fail(
                "model.kernel_size",
                f"0 (it is for conv cells; model.cell is {self.cell!r})",
                self.kernel_size,
            )
        for name in ("dropout", "input_dropout", "recurrent_dropout", "zoneout"):
            _check_rate(f"model.{name}", getattr(self, name))
        if not self.init_scale > 0:
            fail("model.init_scale", "a positive float", self.init_scale)


@dataclasses.dataclass(frozen=True)
class Seq2SeqModelConfig(_RecurrentModel):
    """``model.kind="seq2seq"``: an attention encoder–decoder
    (``recurrent_jax.seq2seq.make_seq2seq``) for the seq2seq tasks.

    The encoder has ``num_layers`` cells of ``hidden_size`` (bidirectional
    when ``bidirectional``), the decoder ``decoder_layers`` (0:
    ``num_layers``); ``forget_bias`` reaches both. ``attention`` is
    "additive", "dot", "general", "concat" or "none"; ``attention_size`` /
    ``attention_layer_size`` 0 mean the defaults (``hidden_size`` / the
    context itself). Without an attention layer the logits read only the
    context c_t (TF Addons' default), which is the same at steps that attend
    alike (a one-character source; the same digits before and after a
    carry); a size (e.g. ``hidden_size``) gives Luong's a_t = tanh([h_t;
    c_t] W_c), which also reads the decoder state.

    ``sampling_prob``: the scheduled-sampling probability (0 is teacher
    forcing; traced, see ``HParams``), scaled by 1 − ε_step of Bengio et
    al.'s ``sampling_schedule`` ("constant": 1; "linear": ε =
    max(``schedule_epsilon``, ``schedule_k`` − ``schedule_c``·step);
    "exponential": ``schedule_k``^step; "inverse_sigmoid": k / (k + exp(step
    / k))). Evaluation decodes greedily and, with ``beam_size`` > 0, also
    with beam search (``length_penalty`` α of the GNMT form).
    """

    KIND: ClassVar[str] = "seq2seq"
    CELLS: ClassVar[tuple[str, ...]] = tuple(seq2seq_model.CELLS)

    embedding_size: int = 32
    decoder_layers: int = 0
    attention: str = "additive"
    attention_size: int = 0
    attention_layer_size: int = 0
    attention_normalize: bool = False
    attention_scale: bool = False
    input_feeding: bool = True
    bridge: str = "copy"
    label_smoothing: float = 0.0
    sampling_prob: float = 0.0
    feedback: str = "sample"
    sampling_schedule: str = "constant"
    schedule_k: float = 1.0
    schedule_c: float = 0.0
    schedule_epsilon: float = 0.0
    beam_size: int = 0
    length_penalty: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _check_positive("model.embedding_size", self.embedding_size)
        for name in ("decoder_layers", "attention_size", "attention_layer_size", "beam_size"):
            _check_non_negative(f"model.{name}", getattr(self, name))
        _check_choice("model.attention", self.attention, ATTENTIONS)
        _check_choice("model.bridge", self.bridge, BRIDGES)
        _check_rate("model.label_smoothing", self.label_smoothing)
        if not 0.0 <= self.sampling_prob <= 1.0:
            fail("model.sampling_prob", "a probability in [0, 1]", self.sampling_prob)
        _check_choice("model.feedback", self.feedback, FEEDBACKS)
        _check_choice("model.sampling_schedule", self.sampling_schedule, SAMPLING_SCHEDULES)
        _check_non_negative("model.schedule_c", self.schedule_c)
        _check_rate("model.schedule_epsilon", self.schedule_epsilon)
        k, schedule = self.schedule_k, self.sampling_schedule
        if schedule == "exponential" and not 0.0 < k < 1.0:
            fail("model.schedule_k", "a value in (0, 1) for the exponential schedule", k)
        if schedule == "inverse_sigmoid" and not k >= 1.0:
            fail("model.schedule_k", "a value >= 1 for the inverse_sigmoid schedule", k)
        _check_non_negative("model.length_penalty", self.length_penalty)


# The tagged union of model configs: ``model.kind`` picks the class.
MODEL_KINDS = {cls.KIND: cls for cls in (RNNModelConfig, Seq2SeqModelConfig)}
ModelConfig = RNNModelConfig | Seq2SeqModelConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The task, its batch sizes and its task-specific ``options`` (a frozen
    dataclass owned by the task, see ``recurrent_jax.data``)."""

    task: str
    batch_size: int = 64
    eval_size: int = 1024
    options: Any = None

    def __post_init__(self):
        _check_positive("data.batch_size", self.batch_size)
        _check_positive("data.eval_size", self.eval_size)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """optax optimizer, schedule and clipping. ``clip_norm`` 0 disables
    clipping; ``learning_rate``, ``weight_decay`` and ``clip_norm`` are the
    defaults of the traced ``HParams``."""

    name: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 1.0
    schedule: str = "constant"
    warmup_steps: int = 0
    end_lr_fraction: float = 0.0

    def __post_init__(self):
        _check_choice("optimizer.name", self.name, OPTIMIZERS)
        _check_choice("optimizer.schedule", self.schedule, SCHEDULES)
        if not self.learning_rate > 0:
            fail("optimizer.learning_rate", "a positive float", self.learning_rate)
        _check_non_negative("optimizer.weight_decay", self.weight_decay)
        _check_non_negative("optimizer.clip_norm", self.clip_norm)
        _check_non_negative("optimizer.warmup_steps", self.warmup_steps)
        if not self.eps > 0:
            fail("optimizer.eps", "a positive float", self.eps)
        for name in ("momentum", "b1", "b2", "end_lr_fraction"):
            _check_rate(f"optimizer.{name}", getattr(self, name))
        if self.name == "adam" and self.weight_decay:
            fail("optimizer.weight_decay", "0 with adam (use name='adamw')", self.weight_decay)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Steps, steps per compiled call, evaluation and checkpoint cadence.

    ``fast_compile`` compiles with XLA's backend optimisation level 0: about
    twice as fast to compile and several times slower to run, for smoke runs.
    """

    num_steps: int = 1000
    steps_per_call: int = 100
    eval_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    fast_compile: bool = False

    def __post_init__(self):
        _check_positive("training.num_steps", self.num_steps)
        _check_positive("training.steps_per_call", self.steps_per_call)
        _check_positive("training.eval_every", self.eval_every)
        _check_positive("training.keep_checkpoints", self.keep_checkpoints)
        _check_non_negative("training.seed", self.seed)
        if self.num_steps % self.steps_per_call:
            fail(
                "training.num_steps",
                f"a multiple of training.steps_per_call={self.steps_per_call}",
                self.num_steps,
            )
        if self.eval_every % self.steps_per_call:
            fail(
                "training.eval_every",
                f"a multiple of training.steps_per_call={self.steps_per_call}",
                self.eval_every,
            )


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: its ``name`` and the typed ``model``, ``data``,
    ``optimizer`` and ``training`` sections (``from_config_dict``)."""

    name: str
    model: ModelConfig
    data: DataConfig
    optimizer: OptimizerConfig
    training: TrainingConfig

    def __post_init__(self):
        steps, warmup = self.training.num_steps, self.optimizer.warmup_steps
        if self.optimizer.schedule == "warmup_cosine" and warmup >= steps:
            expected = f"fewer than training.num_steps ({steps}) with schedule 'warmup_cosine'"
            fail("optimizer.warmup_steps", expected, warmup)


SECTIONS = {
    "model": RNNModelConfig,  # or another of MODEL_KINDS, by model.kind
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "training": TrainingConfig,
}


def base_config(task: str, name: str | None = None):
    """An unlocked ConfigDict holding every key at its default, for config
    files to start from (so each key can be overridden on the command line
    and a typo fails once the file locks it)."""
    import ml_collections

    from recurrent_jax.data import registry

    _check_choice("data.task", task, registry.task_names())
    options = dataclasses.asdict(registry.get_task(task).options())
    data = {"task": task, "batch_size": 64, "eval_size": 1024, **options}
    model = model_dict(MODEL_KINDS[model_kind(task)]())
    sections = {
        k: dataclasses.asdict(c()) for k, c in SECTIONS.items() if k not in ("data", "model")
    }
    return ml_collections.ConfigDict(
        {"name": name or task, "data": data, "model": model, **sections}
    )


def model_kind(task: str) -> str:
    """The model kind that trains on the task named ``task``."""
    from recurrent_jax.data import registry
    from recurrent_jax.data.seq2seq_specs import SEQ2SEQ

    return Seq2SeqModelConfig.KIND if registry.get_task(task).pattern == SEQ2SEQ else "rnn"


def model_dict(model: ModelConfig) -> dict:
    """The plain dict of a model config, its ``kind`` first."""
    return {"kind": model.KIND, **dataclasses.asdict(model)}


def warmup_cosine(config, learning_rate, warmup_steps, *, name="adam", weight_decay=0.0):
    """The configs' optimizer: Adam (or AdamW with ``weight_decay``), global
    norm clipped at 1, linear warmup then cosine decay to 1 % of the peak."""
    config.optimizer.update(
        name=name,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        clip_norm=1.0,
        schedule="warmup_cosine",
        warmup_steps=warmup_steps,
        end_lr_fraction=0.01,
    )


def shrink_to_smoke(config, num_steps=30):
    """A ``:smoke`` variant's training: seconds, a fast compile."""
    config.optimizer.update(warmup_steps=2)
    config.training.update(num_steps=num_steps, steps_per_call=10, eval_every=10, fast_compile=True)


# --- conversion ---------------------------------------------------------------


def from_config_dict(cfg) -> ExperimentConfig:
    """Validates a ConfigDict (or nested mapping) into ``ExperimentConfig``.

    Expected keys: ``name`` (str), and sections ``model``, ``data``,
    ``optimizer``, ``training`` with the fields of the dataclasses above;
    ``data`` also takes the fields of its task's options dataclass. A
    ``sweep`` section is allowed and ignored here (``recurrent_jax.sweep``
    reads it).
    """
    from recurrent_jax.data import registry  # the task registry, imported lazily

    raw = _migrate(_as_dict(cfg))
    _check_keys("config", raw, ["name", "sweep", *SECTIONS])
    name = raw.get("name", "experiment")
    if not isinstance(name, str) or not name:
        fail("config.name", "a non-empty str", name)
    sections = {}
    for key, cls in SECTIONS.items():
        section = _as_dict(raw.get(key, {}), f"config.{key}")
        if key == "data":
            sections[key] = _build_data(section, registry)
        elif key == "model":
            sections[key] = _build_model(section)
        else:
            sections[key] = build_dataclass(cls, section, f"config.{key}")
    return ExperimentConfig(name=name, **sections)


def _build_model(section: dict) -> ModelConfig:
    """The model config of kind ``section["kind"]`` (default "rnn"); a key of
    another kind is an error naming it and the kinds that have it."""
    kind = section.pop("kind", RNNModelConfig.KIND)
    _check_choice("model.kind", kind, MODEL_KINDS)
    cls = MODEL_KINDS[kind]
    own = {f.name for f in dataclasses.fields(cls)}
    for key in section:
        owners = [
            k for k, c in MODEL_KINDS.items() if key in {f.name for f in dataclasses.fields(c)}
        ]
        if key not in own and owners:
            raise ConfigError(
                f"config.model.{key}: applies to model.kind {' or '.join(map(repr, owners))}, "
                f"not to {kind!r} (remove the key)"
            )
    return build_dataclass(cls, section, "config.model")


def _build_data(section: dict, registry) -> DataConfig:
    task_name = section.get("task")
    _check_choice("data.task", task_name, registry.task_names())
    common = {f.name for f in dataclasses.fields(DataConfig)} - {"options"}
    options_cls = registry.get_task(task_name).options
    own = {f.name for f in dataclasses.fields(options_cls)}
    _check_keys("config.data", section, sorted(common | own))
    options = build_dataclass(
        options_cls, {k: v for k, v in section.items() if k in own}, "config.data"
    )
    data = build_dataclass(
        DataConfig, {k: v for k, v in section.items() if k in common}, "config.data"
    )
    return dataclasses.replace(data, options=options)


def build_dataclass(cls, values: Mapping, where: str):
    """``cls(**values)`` after checking keys and types; a field whose type is
    a dataclass (``model.engine``) is built from its own mapping. Value
    errors from ``__post_init__`` name the full key path."""
    _check_keys(where, values, [f.name for f in dataclasses.fields(cls) if f.name != "options"])
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in values.items():
        if dataclasses.is_dataclass(hints[k]):
            kwargs[k] = build_dataclass(hints[k], _as_dict(v, f"{where}.{k}"), f"{where}.{k}")
        else:
            kwargs[k] = _coerce(f"{where}.{k}", v, hints[k])
    try:
        return cls(**kwargs)  # config sections raise ConfigError naming the key
    except ConfigError:
        raise
    except ValueError as error:  # library values (rj.Engine) name the field only
        raise ConfigError(f"{where}.{error}") from None


# Every model key of the configs saved before model kinds had their own
# fields (one flat model section).
_FLAT_MODEL_KEYS = frozenset(
    {f.name for c in MODEL_KINDS.values() for f in dataclasses.fields(c)} | {"kind"}
)


# Keys renamed since configs were first saved: old dotted path -> new.
RENAMED_KEYS = {
    "training.steps_per_chunk": "training.steps_per_call",
    "sweep.chunk_size": "sweep.runs_per_call",
}


def rename_keys(raw: dict) -> dict:
    """``raw`` with keys saved under an old name (``RENAMED_KEYS``) moved to
    the new one; both at once is an error."""
    raw = dict(raw)
    for old, new in RENAMED_KEYS.items():
        section, old_key = old.split(".")
        new_key = new.split(".")[1]
        part = raw.get(section)
        if isinstance(part, Mapping) and old_key in part:
            if new_key in part:
                raise ConfigError(f"config.{old}: renamed to config.{new}; got both")
            part = dict(part)
            part[new_key] = part.pop(old_key)
            raw[section] = part
    return raw


def _migrate(raw: dict) -> dict:
    """Reads configs saved by earlier versions: renamed keys; their
    ``model.impl`` is ``model.engine.impl``; a flat model section (every key
    of every kind) keeps the keys of its own kind (the others held their
    defaults)."""
    raw = _migrate_flat_model(rename_keys(raw))
    model = raw.get("model")
    if isinstance(model, Mapping) and "impl" in model:
        model = dict(model)
        engine = dict(_as_dict(model.get("engine", {}), "config.model.engine"))
        if "impl" in engine:
            raise ConfigError(
                "config.model.impl: moved to config.model.engine.impl; got both "
                f"({model['impl']!r} and {engine['impl']!r})"
            )
        engine["impl"] = model.pop("impl")
        raw = dict(raw, model=dict(model, engine=engine))
    return raw


def _migrate_flat_model(raw: dict) -> dict:
    model = raw.get("model")
    if not isinstance(model, Mapping) or not _FLAT_MODEL_KEYS - {"engine"} <= set(model):
        return raw
    kind = model["kind"]
    own = {f.name for f in dataclasses.fields(MODEL_KINDS.get(kind, RNNModelConfig))}
    kept = {k: v for k, v in model.items() if k in own or k in ("kind", "impl")}
    return dict(raw, model=kept)


def to_dict(config: ExperimentConfig) -> dict:
    """The plain nested dict of a config, task options flattened into
    ``data`` and the model's ``kind`` first in ``model`` (the inverse of
    ``from_config_dict``)."""
    out = dataclasses.asdict(config)
    options = out["data"].pop("options") or {}
    out["data"].update(options)
    out["model"] = model_dict(config.model)
    return out


def _coerce(key: str, value, hint):
    """Checks ``value`` against a field type; ints are accepted for floats."""
    allowed = _allowed_types(hint)
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int) and int in allowed:
        return value
    elif isinstance(value, int | float) and float in allowed:
        return float(value)
    elif isinstance(value, str) and str in allowed:
        return value
    elif isinstance(value, list | tuple) and tuple in allowed:
        return tuple(value)
    if Any in allowed:
        return value
    names = " or ".join(t.__name__ if t is not type(None) else "None" for t in allowed)
    raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")


def _allowed_types(hint) -> tuple:
    if hint is Any:
        return (Any,)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(typing.get_origin(a) or a for a in typing.get_args(hint))
    return (origin or hint,)


def _as_dict(cfg, where: str = "config") -> dict:
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"{where}: expected a ConfigDict or mapping, got {type(cfg).__name__}")


def _check_keys(where: str, values: Mapping, valid) -> None:
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
