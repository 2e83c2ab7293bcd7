"""Typed experiment configs: an ml_collections ConfigDict turned, once, into
frozen dataclasses.

``from_config_dict(cfg)`` is the one boundary where a config file's loose
dict becomes ``ExperimentConfig``: unknown keys, wrong types and impossible
values raise ``ConfigError`` naming the key (``config.model.hidden_size``),
what was expected and what was given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from recurrent_jax import _checks, _imports, backends, cells, mamba
from recurrent_jax.engine import Engine
from recurrent_jax.layers import RATES
from recurrent_jax.seq2seq import model as seq2seq_model
from recurrent_jax.seq2seq import training as seq2seq_training
from recurrent_jax.train import cell_options as cell_options_lib
from recurrent_jax.train import references
from recurrent_jax.train.references import IMPORTS_KEY


class ConfigError(ValueError):
    """A config key is unknown, of the wrong type or has an impossible value."""


OPTIMIZERS = ("adam", "adamw", "sgd")
HEADED_CELLS = ("lstm", "gru", "elman")  # the cells with ``num_heads``
POOLINGS = ("last", "mean", "max")  # many-to-one readouts of the rnn model
LR_SCHEDULES = ("constant", "warmup_cosine")
DTYPES = ("float32", "float64")  # model.dtype: of the params and the computation
GRADIENTS = ("bptt", "truncated", "rtrl", "snap1", "uoro")  # training.gradient


# --- the sections -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _RecurrentModel:
    """The fields every model kind has: its cells and how they run.

    ``forget_bias``: the LSTM forget-gate bias at init (another value with
    another cell is an error). ``engine``: how the recurrence runs, an
    ``rj.Engine`` (``model.engine.impl``, ``.remat``, ``.unroll``,
    ``.hoist``, ``.chunk_length``, ``.deer_*``); a parallel-in-time
    ``impl`` ("associative", "chunked") needs a cell linear in its carry,
    ``"fft"`` a time-invariant one (``s4d``), and a backend that cannot run
    the model's calls fails at the first compile naming why. ``dtype``: of
    every param and of the computation, "float32" or "float64" (a float64
    run turns on ``jax_enable_x64`` for its process before anything is
    built; carries, losses and metrics are then float64 too).
    ``cell_options``: keyword options of the cell's constructor
    (``{"init": "inv"}`` for ``s4d``, a researcher's cell's own), checked
    against its signature (``train.cell_options``).
    """

    KIND: ClassVar[str]
    CELLS: ClassVar[tuple[str, ...]]

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    engine: Engine = Engine()
    forget_bias: float = 1.0
    dtype: str = "float32"
    cell_options: dict = dataclasses.field(default_factory=cell_options_lib.Options)

    def __post_init__(self):
        _checks.check_choice("dtype", self.dtype, DTYPES)
        if not (self.KIND == "rnn" and _imports.is_import_path(self.cell)):
            _checks.check_choice("cell", self.cell, self.CELLS)
        _checks.check_positive("hidden_size", self.hidden_size)
        _checks.check_positive("num_layers", self.num_layers)
        self._check_cell_options()
        impl, need = self.engine.impl, backends.CELL_NEEDS.get(self.engine.impl)
        family = self.cell_constructor() if _imports.is_import_path(self.cell) else self.cell
        if need and not (
            cells.declares("s6" if family in mamba.BLOCKS else family, need)  # a block's is S6
        ):
            _checks.fail(
                "engine.impl", f"a backend other than {impl!r} for the {self.cell} cell", impl
            )
        if self.cell != "lstm" and self.forget_bias != 1.0:
            _checks.fail(
                "forget_bias",
                f"the default 1.0 (it sets the forget gate of LSTMs; model.cell is {self.cell!r})",
                self.forget_bias,
            )

    def _check_cell_options(self):
        """``cell_options`` named by the constructor's signature, tried by
        building the cell once (a convolutional cell is built by the task)."""
        make = self.cell_constructor()
        options = cell_options_lib.check(self.cell_options, make, self.cell)
        object.__setattr__(self, "cell_options", options)
        if options and self.cell not in cells.CONV_REGISTRY:
            cell_options_lib.trial(make, self.hidden_size, options)

    def cell_constructor(self):
        """The cell family's constructor: built in, or a researcher's own
        named by import path (``"my_cells:my_cell"``, a function declared
        ``(hidden_size, **options) -> rj.Cell``; nothing else is called)."""
        if _imports.is_import_path(self.cell):
            found = _imports.load_object(self.cell, what="cell")
            return _imports.checked_function(
                found, self.cell, what="cell", returns=cells.Cell, wanted="rj.Cell", args=(1,)
            )
        return {**cells.REGISTRY, **cells.CONV_REGISTRY, **mamba.BLOCKS}[self.cell]


@dataclasses.dataclass(frozen=True)
class RNNModelConfig(_RecurrentModel):
    """``model.kind="rnn"``: ``rj.layers.cell_stack`` of ``num_layers``
    cells (bidirectional when ``bidirectional``) and a linear readout: the
    stack of ``rj.nn.LSTM`` and the other front doors, the same options with
    the same meanings.

    ``dropout`` (on every layer's outputs but the last, as PyTorch),
    ``input_dropout`` (variational, on every layer's inputs, as Keras),
    ``recurrent_dropout`` and ``zoneout`` are compiled in when non-zero
    here; their values (like ``init_scale``, which multiplies every weight
    matrix at init) are the defaults of the traced ``HParams``. The
    convolutional cells ("conv_lstm", "conv_gru", for tasks of frames) take
    ``kernel_size`` (odd; 0 for the others) and ``hidden_size`` channels;
    the readout is then a 1×1 convolution. ``num_heads`` > 0 makes an LSTM,
    GRU or Elman cell's W_hh block-diagonal (``rj.cells.lstm(num_heads=)``;
    0: dense). ``bias`` is the cells' bias mode ("double" as PyTorch,
    "single" as Keras, "none"). ``cell`` may also be a researcher's own, by
    import path (``"my_cells:my_cell"``: a constructor with the signature of
    ``rj.cells.lstm``, hidden size -> ``rj.Cell``). ``cell="mamba"`` stacks
    Mamba blocks (``rj.mamba_block`` with d_model = ``hidden_size`` and its
    defaults), which take ``dropout`` between layers but no per-layer
    regulariser, and ``engine`` for their SSM. ``residual`` adds each
    layer's input to its output from the second layer up (``cell_stack``).

    Token inputs (a task of int ids, ``TaskSpec.input_vocab``) go through an
    embedding of ``embedding_size`` features (params ``embedding`` (V, E)).
    A many-to-one task reads the output after the last valid step
    (``pooling="last"``), or pools the outputs of all valid steps ("mean",
    "max").
    """

    KIND: ClassVar[str] = "rnn"
    CELLS: ClassVar[tuple[str, ...]] = (*cells.REGISTRY, *cells.CONV_REGISTRY, *mamba.BLOCKS)

    bidirectional: bool = False
    dropout: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    init_scale: float = 1.0
    kernel_size: int = 0
    num_heads: int = 0
    bias: str = "double"
    embedding_size: int | None = None
    pooling: str = "last"
    residual: bool = False

    def __post_init__(self):
        super().__post_init__()
        _checks.check_choice("bias", self.bias, cells.base.BIAS_MODES)
        _checks.check_choice("pooling", self.pooling, POOLINGS)
        if self.embedding_size is not None:
            _checks.check_positive_int("embedding_size", self.embedding_size)
        if _imports.is_import_path(self.cell):  # it gives a Cell, or an error naming the path
            self.cell_constructor()(self.hidden_size, **self.cell_options)
        _checks.check_non_negative("num_heads", self.num_heads)
        if self.num_heads and self.cell not in HEADED_CELLS:
            _checks.fail(
                "num_heads",
                f"0 for the {self.cell} cell (heads: {HEADED_CELLS})",
                self.num_heads,
            )
        if self.num_heads and self.hidden_size % self.num_heads:
            _checks.fail(
                "num_heads",
                f"a divisor of model.hidden_size={self.hidden_size}",
                self.num_heads,
            )
        conv = self.cell in cells.CONV_REGISTRY
        if conv and (self.kernel_size < 1 or self.kernel_size % 2 == 0):
            _checks.fail(
                "kernel_size", f"an odd size >= 1 for the {self.cell} cell", self.kernel_size
            )
        if not conv and self.kernel_size:
            _checks.fail(
                "kernel_size",
                f"0 (it is for conv cells; model.cell is {self.cell!r})",
                self.kernel_size,
            )
        for name in RATES:
            _checks.check_rate(name, getattr(self, name))
        self._check_block()
        if not self.init_scale > 0:
            _checks.fail("init_scale", "a positive float", self.init_scale)

    def _check_block(self):
        """A block (``mamba``) has no bias mode and takes no per-layer
        regulariser (``dropout`` between layers applies)."""
        if self.cell not in mamba.BLOCKS and self.cell != "s6":
            return
        if self.bias != "double":
            _checks.fail("bias", f"the default 'double' ({self.cell} has no bias mode)", self.bias)
        for name in ("input_dropout", "recurrent_dropout", "zoneout"):
            if self.cell in mamba.BLOCKS and getattr(self, name):
                _checks.fail(name, f"0 for the {self.cell} block", getattr(self, name))


@dataclasses.dataclass(frozen=True)
class Seq2SeqModelConfig(_RecurrentModel):
    """``model.kind="seq2seq"``: the attention encoder–decoder
    ``recurrent_jax.seq2seq.make_seq2seq``, built from the fields of this
    section that are its arguments, under the same names and meanings
    (``network_options``; None where it takes None): the encoder has
    ``num_layers`` cells of ``encoder_hidden_size`` (None: ``hidden_size``)
    per direction, ``bidirectional_encoder``; the decoder
    ``decoder_layers`` (None: ``num_layers``) cells of ``hidden_size``;
    ``attention`` "additive", "dot", "general", "concat" or None, of
    ``attention_size`` units (None: ``hidden_size``); an attention layer of
    ``attention_layer_size`` (None: the logits read the context alone, TF
    Addons' default; a size gives Luong's a_t = tanh([h_t; c_t] W_c), which
    also reads the decoder state); ``forget_bias`` reaches every LSTM.

    Training and evaluation: ``label_smoothing``; ``sampling_prob``, the
    scheduled-sampling probability (0 is teacher forcing; traced, see
    ``HParams``), scaled by 1 − ε_step of Bengio et al.'s
    ``sampling_schedule`` ("constant": 1; "linear": ε =
    max(``schedule_epsilon``, ``schedule_k`` − ``schedule_c``·step);
    "exponential": ``schedule_k``^step; "inverse_sigmoid": k / (k + exp(step
    / k))). Evaluation decodes greedily and, with a ``beam_size``, also with
    beam search (``length_penalty`` α of the GNMT form).
    """

    KIND: ClassVar[str] = "seq2seq"
    CELLS: ClassVar[tuple[str, ...]] = tuple(seq2seq_model.CELLS)

    encoder_hidden_size: int | None = None
    decoder_layers: int | None = None
    bidirectional_encoder: bool = False
    attention: str | None = "additive"
    attention_size: int | None = None
    attention_normalize: bool = False
    attention_scale: bool = False
    attention_layer_size: int | None = None
    input_feeding: bool = True
    output_attention: bool = True
    embedding_size: int = 32
    bridge: str = "copy"
    label_smoothing: float = 0.0
    sampling_prob: float = 0.0
    feedback: str = "sample"
    sampling_schedule: str = "constant"
    schedule_k: float = 1.0
    schedule_c: float = 0.0
    schedule_epsilon: float = 0.0
    beam_size: int | None = None
    length_penalty: float = 0.0

    def network_options(self) -> dict:
        """``make_seq2seq``'s keyword arguments that this section holds."""
        names = inspect.signature(seq2seq_model.make_seq2seq).parameters
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names}

    def __post_init__(self):
        super().__post_init__()
        seq2seq_model.make_seq2seq(src_vocab_size=1, tgt_vocab_size=1, **self.network_options())
        _checks.check_rate("label_smoothing", self.label_smoothing)
        if not 0.0 <= self.sampling_prob <= 1.0:
            _checks.fail("sampling_prob", "a probability in [0, 1]", self.sampling_prob)
        _checks.check_choice("feedback", self.feedback, seq2seq_training.FEEDBACKS)
        _checks.check_choice(
            "sampling_schedule", self.sampling_schedule, seq2seq_training.SAMPLING_SCHEDULES
        )
        _checks.check_non_negative("schedule_c", self.schedule_c)
        _checks.check_rate("schedule_epsilon", self.schedule_epsilon)
        k, schedule = self.schedule_k, self.sampling_schedule
        if schedule == "exponential" and not 0.0 < k < 1.0:
            _checks.fail("schedule_k", "a value in (0, 1) for the exponential schedule", k)
        if schedule == "inverse_sigmoid" and not k >= 1.0:
            _checks.fail("schedule_k", "a value >= 1 for the inverse_sigmoid schedule", k)
        if self.beam_size is not None:
            _checks.check_positive("beam_size", self.beam_size)
        _checks.check_non_negative("length_penalty", self.length_penalty)


# The tagged union of model configs: ``model.kind`` picks the class.
MODEL_KINDS = {cls.KIND: cls for cls in (RNNModelConfig, Seq2SeqModelConfig)}
ModelConfig = RNNModelConfig | Seq2SeqModelConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The task, its batch sizes and its task-specific ``options`` (a frozen
    dataclass owned by the task, see ``recurrent_jax.data``).

    ``stream``: the training rows stay on the host and are fed a call at a
    time (``recurrent_jax.data.stream``: shuffled by ``shuffle_seed`` each
    epoch, ``prefetch`` calls read ahead on background threads), for data
    larger than device memory; the task must have ``TaskSpec.train_rows``.
    Otherwise the data lives on the device and batches are drawn by key.
    """

    task: str
    batch_size: int = 64
    eval_size: int = 1024
    stream: bool = False
    shuffle_seed: int = 0
    prefetch: int = 2
    options: Any = None

    def __post_init__(self):
        _checks.check_positive("batch_size", self.batch_size)
        _checks.check_positive("eval_size", self.eval_size)
        _checks.check_bool("stream", self.stream)
        _checks.check_non_negative_int("shuffle_seed", self.shuffle_seed)
        _checks.check_positive_int("prefetch", self.prefetch)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in ("shuffle_seed", "prefetch"):  # the stream's own: never silently unused
            if not self.stream and getattr(self, name) != defaults[name]:
                _checks.fail(name, "its default unless data.stream is True", getattr(self, name))


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
        _checks.check_choice("name", self.name, OPTIMIZERS)
        _checks.check_choice("schedule", self.schedule, LR_SCHEDULES)
        if not self.learning_rate > 0:
            _checks.fail("learning_rate", "a positive float", self.learning_rate)
        _checks.check_non_negative("weight_decay", self.weight_decay)
        _checks.check_non_negative("clip_norm", self.clip_norm)
        _checks.check_non_negative("warmup_steps", self.warmup_steps)
        if not self.eps > 0:
            _checks.fail("eps", "a positive float", self.eps)
        for name in ("momentum", "b1", "b2", "end_lr_fraction"):
            _checks.check_rate(name, getattr(self, name))
        if self.name == "adam" and self.weight_decay:
            _checks.fail("weight_decay", "0 with adam (use name='adamw')", self.weight_decay)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Steps, steps per compiled call, evaluation and checkpoint cadence.

    ``fast_compile`` compiles with XLA's backend optimisation level 0: about
    twice as fast to compile and several times slower to run, for smoke runs.

    ``gradient``: how the params' gradient is taken. "bptt" (default):
    backpropagation through each sampled batch of sequences. The others read
    the task as one long stream (its sequences end to end, the carry never
    reset) and update the params every ``update_every`` stream steps, one
    update a training step (``train.online_loop``): "truncated" backprops
    through the last ``update_every`` steps only (TBPTT, the carry's gradient
    stopped between updates); "rtrl", "snap1" and "uoro" carry the gradient
    forward (``rj.online``), with no sequence stored.
    """

    num_steps: int = 1000
    steps_per_call: int = 100
    eval_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    fast_compile: bool = False
    gradient: str = "bptt"
    update_every: int = 0

    def __post_init__(self):
        _checks.check_choice("gradient", self.gradient, GRADIENTS)
        _checks.check_non_negative_int("update_every", self.update_every)
        if self.gradient == "bptt" and self.update_every:
            _checks.fail(
                "update_every",
                "0 with gradient='bptt' (it sets the stream steps per update of the "
                "online gradients)",
                self.update_every,
            )
        if self.gradient != "bptt" and not self.update_every:
            _checks.fail(
                "update_every", f"stream steps per update (>= 1) with gradient={self.gradient!r}", 0
            )
        _checks.check_positive("num_steps", self.num_steps)
        _checks.check_positive("steps_per_call", self.steps_per_call)
        _checks.check_positive("eval_every", self.eval_every)
        _checks.check_positive("keep_checkpoints", self.keep_checkpoints)
        _checks.check_non_negative("seed", self.seed)
        if self.num_steps % self.steps_per_call:
            _checks.fail(
                "num_steps",
                f"a multiple of training.steps_per_call={self.steps_per_call}",
                self.num_steps,
            )
        if self.eval_every % self.steps_per_call:
            _checks.fail(
                "eval_every",
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
            _checks.fail("optimizer.warmup_steps", expected, warmup)


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

    data = data_defaults(task)
    model = model_dict(MODEL_KINDS[model_kind(task)]())
    sections = {
        k: dataclasses.asdict(c()) for k, c in SECTIONS.items() if k not in ("data", "model")
    }
    return ml_collections.ConfigDict(
        {"name": name or task, "data": data, "model": model, **sections}
    )


def data_defaults(task: str) -> dict:
    """The ``data`` section of a config of ``task``: the common keys and the
    task's own, each at its default."""
    with config_errors("config"):
        options = dataclasses.asdict(task_options(task)())
    common = {f.name: f.default for f in dataclasses.fields(DataConfig) if f.name != "options"}
    return {**common, "task": task, **options}


def task_options(task: str) -> type:
    """The options class of the task named ``task``: a frozen dataclass
    (a value, hashed and compared) whose fields are not the common
    ``config.data`` keys (one key, one meaning)."""
    from recurrent_jax.data import registry

    with config_errors("config"):
        options = registry.get_task(task).options
    params = getattr(options, "__dataclass_params__", None)
    if not (isinstance(options, type) and params is not None and params.frozen):
        raise ConfigError(
            f"config.data.task: expected the options of {task!r} to be a frozen dataclass "
            f"(@dataclasses.dataclass(frozen=True)), got {options!r}"
        )
    common = {f.name for f in dataclasses.fields(DataConfig)}
    clashes = sorted(common & {f.name for f in dataclasses.fields(options)})
    if clashes:
        raise ConfigError(
            f"config.data.task: expected the options of {task!r} ({options.__name__}) to leave "
            f"the common config.data keys alone, got the field(s) {clashes}; rename them"
        )
    return options


def model_kind(task: str) -> str:
    """The model kind that trains on the task named ``task``."""
    from recurrent_jax.data import registry

    kind = registry.get_task(task).model_kind
    with config_errors("config"):
        _checks.check_choice("data.task's model_kind", kind, MODEL_KINDS)
    return kind


def model_dict(model: ModelConfig) -> dict:
    """The plain dict of a model config, its ``kind`` first."""
    out = {"kind": model.KIND, **dataclasses.asdict(model)}
    return out | {"cell_options": dict(model.cell_options)}


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

    Expected keys: ``name`` (one path component, ``check_name``), and
    sections ``model``, ``data``, ``optimizer``, ``training`` with the
    fields of the dataclasses above; ``data`` also takes the fields of its
    task's options dataclass, its relative paths taken from the working
    directory (``references.resolve_paths``). A ``sweep`` section and a
    run's ``imports`` record are allowed and ignored here
    (``recurrent_jax.sweep`` and ``references.admit_code`` read them).
    """
    raw = _as_dict(cfg)
    check_keys("config", raw, ["name", "sweep", IMPORTS_KEY, *SECTIONS])
    name = check_name(raw.get("name", "experiment"))
    sections = {}
    for key, cls in SECTIONS.items():
        section = _as_dict(raw.get(key, {}), f"config.{key}")
        if key == "data":
            sections[key] = _build_data(section)
        elif key == "model":
            sections[key] = _build_model(section)
        else:
            sections[key] = build_dataclass(cls, section, f"config.{key}")
    with config_errors("config"):  # cross-section checks name section.field
        return ExperimentConfig(name=name, **sections)


def _build_model(section: dict) -> ModelConfig:
    """The model config of kind ``section["kind"]`` (default "rnn"); a key of
    another kind is an error naming it and the kinds that have it."""
    kind = section.pop("kind", RNNModelConfig.KIND)
    with config_errors("config"):
        _checks.check_choice("model.kind", kind, MODEL_KINDS)
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


NAME_MAX_LENGTH = 100  # characters of config.name: it names files and folders


def check_name(name) -> str:
    """``config.name``, one path component (it names the run's folder under
    ``runs/``): 1 to ``NAME_MAX_LENGTH`` printable characters, no ``/``,
    ``\\`` or NUL, not ``.`` or ``..``; a ConfigError naming it otherwise."""
    expected = (
        f"one path component of 1 to {NAME_MAX_LENGTH} printable characters "
        "(no '/', '\\', NUL or control characters; not '.' or '..')"
    )
    if not isinstance(name, str):
        raise ConfigError(f"config.name: expected {expected}, got {type(name).__name__}")
    if len(name) > NAME_MAX_LENGTH:
        raise ConfigError(f"config.name: expected {expected}, got {len(name)} characters")
    bad = not name or name in (".", "..") or any(c in "/\\" or not c.isprintable() for c in name)
    if bad:
        raise ConfigError(f"config.name: expected {expected}, got {name!r}")
    return name


def _build_data(section: dict) -> DataConfig:
    task_name = section.get("task")
    with config_errors("config"):
        if not isinstance(task_name, str):
            _checks.fail("data.task", "a task name or import path", task_name)
    options_cls = task_options(task_name)
    section = references.resolve_paths(section, options_cls, Path.cwd())
    common = {f.name for f in dataclasses.fields(DataConfig)} - {"options"}
    own = {f.name for f in dataclasses.fields(options_cls)}
    check_keys("config.data", section, sorted(common | own))
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
    check_keys(where, values, [f.name for f in dataclasses.fields(cls) if f.name != "options"])
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in values.items():
        if dataclasses.is_dataclass(hints[k]):
            kwargs[k] = build_dataclass(hints[k], _as_dict(v, f"{where}.{k}"), f"{where}.{k}")
        else:
            kwargs[k] = _coerce(f"{where}.{k}", v, hints[k])
    with config_errors(where):  # the section's checks name the field
        return cls(**kwargs)


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
    elif isinstance(value, Mapping) and dict in allowed:
        return dict(value)
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


def check_keys(where: str, values: Mapping, valid) -> None:
    """A section's keys must be among ``valid`` (``where``: its path)."""
    with config_errors(""):
        _checks.check_unknown(where, values, valid, what="key")


@contextlib.contextmanager
def config_errors(where: str):
    """The library's argument errors inside become ``ConfigError`` named
    under ``where`` (``config.model`` + ``hidden_size: expected ...``)."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}.{error}" if where else str(error)) from None
