"""A trained run's network as a module of each front door, holding its
params: ``run.as_nn()`` (flax.linen, bound), ``run.as_nnx()`` (Flax NNX)
and ``run.as_eqx()`` (Equinox).

An ``rnn`` run comes back as the door's ``RNN`` over the run's stack
(``rnn_model.make_network``) with the embedding and readout around it: a
call ``module(xs, seq_lengths=...)`` on inputs as the model reads them
(``run.task.inputs.encode`` applied) gives the run's readout values,
(N, C) or (N, T, C) — logits of a classification. Its params are the
run's, ``{"rnn": ..., "readout": {"w", "b"}, "embedding"?}``. A ``seq2seq``
run comes back as the door's ``Seq2Seq``. The modules evaluate
(regularisers off, zoneout's expectation); they are for inference, and
for porting (``rj.interop``) or fine-tuning in the door's own style.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import recurrent_jax as rj
from recurrent_jax.data.base import LAST
from recurrent_jax.train import rnn_model
from recurrent_jax.train.hparams import Rates


def network(run) -> rj.Layer:
    """The run's recurrent stack in evaluation mode (its zoneout rate kept
    as a Python float: evaluation takes its expectation)."""
    rates = Rates(*(0.0 if r is None else float(r) for r in run.hparams.rates))
    return rnn_model.make_network(run.config.model, rates, len(run.task.spatial_shape))


def head(readout: dict, ys, seq_lengths, *, pooling: str, many_to_one: bool):
    """The readout of the stack's outputs ``ys``: pooled over the valid
    steps first for a many-to-one run that pools (``rnn_model.pool``)."""
    if many_to_one and pooling != "last":
        mask = None if seq_lengths is None else rj.length_mask(seq_lengths, ys.shape[1])
        ys = rnn_model.pool(ys, mask, pooling)
    bias = readout["b"]
    return ys @ readout["w"] + bias.reshape((1,) * (ys.ndim - 1) + bias.shape)


def _shape(run) -> dict:
    """What the modules are built from: the stack, its options and sizes."""
    many_to_one = run.task.output_mode == LAST
    pooling = run.config.model.pooling
    return dict(
        layer=network(run),
        return_sequences=not many_to_one or pooling != "last",
        pooling=pooling,
        many_to_one=many_to_one,
    )


def _seq2seq_options(run) -> dict:
    model, vocab = run.config.model, run.task.vocab
    options = dict(model.network_options(), param_dtype=jnp.dtype(model.dtype))
    return dict(src_vocab_size=vocab.source_size, tgt_vocab_size=vocab.target_size, **options)


def _input_features(run) -> int:
    embedding = run.params.get("embedding")
    return run.task.input_size if embedding is None else embedding.shape[-1]


# --- flax.linen ----------------------------------------------------------------------


def as_nn(run):
    """The network as a flax.linen module bound to the run's params
    (``module.bind({"params": run.params})``): call it directly."""
    import flax.linen as nn

    if run.config.model.KIND == "seq2seq":
        return rj.nn.Seq2Seq(**_seq2seq_options(run)).bind({"params": run.params})
    shape = _shape(run)

    class Network(nn.Module):
        """A trained ``rnn`` run: embedding, ``rj.nn.RNN`` over its stack,
        readout."""

        @nn.compact
        def __call__(self, xs, *, seq_lengths=None):
            if "embedding" in run.params:
                xs = self.param("embedding", _fixed(run.params["embedding"]))[xs]
            rnn = rj.nn.RNN(shape["layer"], return_sequences=shape["return_sequences"], name="rnn")
            ys = rnn(xs, seq_lengths=seq_lengths)
            readout = self.param("readout", _fixed(run.params["readout"]))
            return head(readout, ys, seq_lengths, **_head_options(shape))

    return Network().bind({"params": run.params})


def _fixed(value):
    return lambda rng: value


def _head_options(shape: dict) -> dict:
    return {"pooling": shape["pooling"], "many_to_one": shape["many_to_one"]}


# --- Flax NNX -------------------------------------------------------------------------


def as_nnx(run):
    """The network as a Flax NNX module holding the run's params, in
    evaluation mode."""
    from flax import nnx

    if run.config.model.KIND == "seq2seq":
        module = rj.nnx.Seq2Seq(rngs=nnx.Rngs(0), **_seq2seq_options(run))
        return rj.nnx.load_params(module, run.params)
    shape = _shape(run)

    class Network(nnx.Module):
        """A trained ``rnn`` run: embedding, ``rj.nnx.RNN`` over its stack,
        readout (params ``embedding``, ``rnn``, ``readout``)."""

        def __init__(self):
            self.rnn = rj.nnx.RNN(
                shape["layer"],
                _input_features(run),
                rngs=nnx.Rngs(0),
                return_sequences=shape["return_sequences"],
                deterministic=True,
            )
            rj.nnx.load_params(self.rnn, run.params["rnn"])
            params = {k: v for k, v in run.params.items() if k != "rnn"}
            self.head = nnx.data(jax.tree_util.tree_map(nnx.Param, params))

        def __call__(self, xs, *, seq_lengths=None):
            params = _values(self.head)
            if "embedding" in params:
                xs = params["embedding"][xs]
            ys = self.rnn(xs, seq_lengths=seq_lengths)
            return head(params["readout"], ys, seq_lengths, **_head_options(shape))

    return Network()


def _values(tree) -> dict:
    from flax import nnx

    is_variable = lambda leaf: isinstance(leaf, nnx.Variable)  # noqa: E731
    return jax.tree_util.tree_map(nnx.Variable.get_value, tree, is_leaf=is_variable)


# --- Equinox -------------------------------------------------------------------------


def as_eqx(run):
    """The network as an Equinox module holding the run's params
    (``inference=True``)."""
    import equinox as eqx

    if run.config.model.KIND == "seq2seq":
        module = rj.eqx.Seq2Seq(key=jax.random.key(0), **_seq2seq_options(run))
        return eqx.tree_at(lambda m: m.params, module, run.params)
    shape = _shape(run)

    class Network(eqx.Module):
        """A trained ``rnn`` run: embedding, ``rj.eqx.RNN`` over its stack,
        readout."""

        rnn: rj.eqx.RNN
        head: dict

        def __call__(self, xs, *, seq_lengths=None):
            if "embedding" in self.head:
                xs = self.head["embedding"][xs]
            ys = self.rnn(xs, seq_lengths=seq_lengths)
            return head(self.head["readout"], ys, seq_lengths, **_head_options(shape))

    rnn = rj.eqx.RNN(
        shape["layer"],
        _input_features(run),
        key=jax.random.key(0),
        inference=True,
        return_sequences=shape["return_sequences"],
    )
    rnn = rj.eqx.load_params(rnn, run.params["rnn"])
    return Network(rnn, {k: v for k, v in run.params.items() if k != "rnn"})
