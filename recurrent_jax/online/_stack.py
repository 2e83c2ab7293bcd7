r"""Online learning for a stack of recurrent layers, truncated in depth.

Layer l reads the outputs y^{l−1}_t of the layer below and keeps its own
learner's traces, ``dh^l/dθ^l`` with its inputs taken as given. At step t
its loss is the layers above it run one step from their carries
h^{k>l}_{t−1}, then the caller's ``loss_fn``, so its gradient is

.. math::  \frac{dL_t}{dθ^l} ≈ \frac{∂L_t}{∂h^l_t}\Big|_{h^{k>l}_{t−1}}\;\frac{dh^l_t}{dθ^l},

the spatial backprop of Zucchet et al. 2023 (§3, "Online learning of
long-range dependencies", NeurIPS). Exact (what the top layer's learner
gives) for the top layer and the head; for a lower layer it drops the
influence of θ^l through the past carries of the layers above. One layer
is its learner. Cost per step: the learners' work plus L(L−1)/2 extra cell
steps (each layer's loss re-runs the layers above it).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from recurrent_jax import _step
from recurrent_jax.online._learner import OnlineLearner, OnlineState, Step


def stack(learners: Sequence[OnlineLearner]) -> OnlineLearner:
    r"""An ``OnlineLearner`` for recurrent layers applied in sequence.

    Args:
      learners: one per layer, bottom first (``rtrl``, ``snap1``, ``uoro``;
        each built for its layer's input size, the layer below's H).

    Returns:
      An ``OnlineLearner`` whose params are ``{"layer_0": ..., ...}`` (as
      ``rj.layers.cell_stack``'s), whose ``OnlineState`` holds tuples of the
      layers' carries and traces (and the key of its UORO layers, split for
      them at every step), and whose ``Step.grads`` has the params' tree;
      ``Step.y`` is the top layer's output. ``method`` is "stack".
    """
    learners = tuple(learners)
    if not learners or not all(isinstance(x, OnlineLearner) for x in learners):
        raise ValueError(
            f"learners: expected a non-empty sequence of rj.online learners, got {learners!r}"
        )
    names = [f"layer_{i}" for i in range(len(learners))]
    keyed = [x.method == "uoro" for x in learners]

    def init(params, batch_shape, key=None):
        if any(keyed) == (key is None):
            needed = "a key for its UORO layers" if any(keyed) else "no key (no UORO layer)"
            raise ValueError(f"key: the stack takes {needed}, got {key!r}")
        keys = _layer_keys(key, keyed)
        states = [
            x.init(params[n], batch_shape, k) for x, n, k in zip(learners, names, keys, strict=True)
        ]
        return OnlineState(tuple(s.carry for s in states), tuple(s.traces for s in states), key)

    def step(params, state, x, loss_fn, head=None, target=None, *, valid=None, reset=None):
        key, layer_keys = state.key, [None] * len(learners)
        if key is not None:
            key, subkey = jax.random.split(key)
            layer_keys = _layer_keys(subkey, keyed)
        carries, traces, grads = [], [], {}
        for i, (learner, name) in enumerate(zip(learners, names, strict=True)):
            above = _above(learners[i + 1 :], params, names[i + 1 :], state.carry[i + 1 :], loss_fn)
            layer = OnlineState(state.carry[i], state.traces[i], layer_keys[i])
            layer, out = learner.step(
                params[name], layer, x, above(valid, reset), head, target, valid=valid, reset=reset
            )
            carries.append(layer.carry)
            traces.append(layer.traces)
            grads[name] = out.grads
            x = out.y
        state = OnlineState(tuple(carries), tuple(traces), key)
        return state, Step(out.loss, out.y, grads, out.head_grads)

    return OnlineLearner(init=init, step=step, method="stack", cell=learners[-1].cell)


def _layer_keys(key, keyed):
    """A key for each UORO layer (None for the others)."""
    if key is None:
        return [None] * len(keyed)
    keys = jax.random.split(key, len(keyed))
    return [k if uses else None for k, uses in zip(keys, keyed, strict=True)]


def _above(learners, params, names, carries, loss_fn):
    """``above(valid, reset)``: a lower layer's loss, the layers above it run
    one step from their carries (as their learners step), then ``loss_fn``."""

    def above(valid, reset):
        def loss(head, y, target):
            for learner, name, carry in zip(learners, names, carries, strict=True):
                cell, p = learner.cell, params[name]
                batch = y.shape[:-1]
                options = _step.StepOptions(
                    reset_carry=None if reset is None else cell.initial_carry(batch, _dtype(carry))
                )
                inputs = _step.StepInputs(cell.project(p, y), valid=valid, reset=reset)
                _, y = _step.step(cell, p, options, carry, inputs)
            return loss_fn(head, y, target)

        return loss

    return above


def _dtype(carry):
    return jax.tree_util.tree_leaves(carry)[0].dtype
