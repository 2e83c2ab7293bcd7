"""``impl="cpu"``: plain LSTM and GRU recurrences as XLA FFI custom calls
(``rnn.cc`` and the headers beside it), built on first use with the
system's C++ compiler.

One call runs all T steps, the input projection inside each step's product
and one pass of gate math a step, with no per-step dispatch; the backward
call gives the cotangents of the inputs, weights and biases too (``scan``).
Without a compiler (or when the build fails) the backend reports why and
the engine keeps XLA's paths.
"""

from recurrent_jax.cpu.build import unavailable
from recurrent_jax.cpu.scan import cpu_scan

__all__ = ["cpu_scan", "unavailable"]
