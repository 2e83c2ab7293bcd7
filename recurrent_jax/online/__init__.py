"""Online learning: gradients carried forward in time, memory independent of T.

``rtrl`` is exact for cells linear in their carry; ``snap1`` and ``uoro``
approximate it for cells with a dense W_hh. Each returns an
``OnlineLearner`` (``init``, ``step``); ``accumulate`` runs one over a
whole stream; ``stack`` chains the learners of several layers.
"""

from recurrent_jax.online._diagonal import rtrl, snap1
from recurrent_jax.online._learner import OnlineLearner, OnlineState, Step, accumulate
from recurrent_jax.online._stack import stack
from recurrent_jax.online._uoro import UoroTraces, uoro

__all__ = [
    "OnlineLearner",
    "OnlineState",
    "Step",
    "UoroTraces",
    "accumulate",
    "rtrl",
    "snap1",
    "stack",
    "uoro",
]
