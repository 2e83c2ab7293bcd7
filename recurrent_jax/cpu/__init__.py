"""``impl="cpu"``: plain LSTM and GRU recurrences as XLA FFI custom calls
(``rnn.cc``), built on first use with the system's C++ compiler.

One call runs all T steps, one small GEMM and one pass of gate math a step
with no per-step dispatch; one more projects the inputs of all steps
(``project``); the weight gradients stay in XLA as single large GEMMs
(``scan``). Without a compiler (or when
the build fails) the backend reports why and the engine keeps XLA's paths.
"""

from recurrent_jax.cpu.build import unavailable
from recurrent_jax.cpu.scan import cpu_scan, project

__all__ = ["cpu_scan", "project", "unavailable"]
