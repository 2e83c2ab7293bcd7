"""How the sequence engine runs a recurrence: one value for every
implementation choice.

``rj.unroll``, ``rj.layer`` / ``stack`` / ``bidirectional``, the modules of
every front door (``rj.nn``, ``rj.nnx``, ``rj.eqx``) and configs
(``model.engine.*``) all take an ``Engine``; the cell, the data and the
regularisers stay separate arguments. Keywords given beside it override its
fields, so the common case stays short::

    rj.unroll(cell, params, xs, impl="scan")
    rj.unroll(cell, params, xs, engine=rj.Engine(remat=256, unroll=4))
"""

from __future__ import annotations

import dataclasses

from recurrent_jax import _checks, backends

IMPLS = ("auto", *backends.NAMES)


@dataclasses.dataclass(frozen=True)
class Engine:
    r"""Implementation settings of ``rj.unroll`` (hashable, so static under jit).

    Attributes:
      impl: "auto" or a backend of ``rj.backends.TABLE``: "scan" (autodiff
        of ``lax.scan``), "fused" (custom VJP: the backward scan carries only
        the sequential terms, weight gradients are single GEMMs), "cudnn"
        (cuDNN's LSTM kernel on a CUDA GPU), "pallas" (a persistent kernel:
        all steps in one launch, W_hh on chip; opt-in until measured),
        "pallas_tpu" (a Pallas TPU kernel for cells linear in their carry;
        "auto" takes it on TPUs, on CPUs it runs interpreted), "fft" (a
        time-invariant cell, S4D, as a causal convolution by FFT; "auto"
        takes it unless a per-step option is on), "selective" (Mamba's
        selective scan for s6, with a segmented hand-written gradient;
        "auto" takes it on CPUs unless a per-step option is on; no
        forward-mode autodiff),
        "associative" / "chunked"
        (parallel in time, cells linear in their carry), "deer" (Newton
        iterations for any cell). "auto" takes the first backend of the
        table that can run the call and that measurement prefers; an
        explicit backend that cannot run the call is an error listing why.
      unroll: steps per scan iteration, or "auto" (1 on CPU; on GPUs 16 for
        H < 1024, else 8, as measured on an H100).
      hoist: compute the input half of every gate for all steps as one GEMM
        before the scan (default); False projects x_t inside each step
        (only the "scan" backend runs it).
      remat: None, or rematerialise in segments of ``remat`` steps: the
        forward keeps one carry per segment, the backward recomputes each
        segment; activation memory O(T/remat + remat) steps for one more
        forward pass (``remat`` ≈ √T minimises it).
      chunk_length: steps per chunk of the "chunked" backend (None: 256).
      deer_tol: "deer" stops once no carry entry moves more than this.
      deer_max_iters: "deer" iteration limit (None: min(T + 1, 100)).
      deer_quasi: quasi-DEER, diagonal Jacobians in the forward iterations.
    """

    impl: str = "auto"
    unroll: int | str = "auto"
    hoist: bool = True
    remat: int | None = None
    chunk_length: int | None = None
    deer_tol: float = 1e-5
    deer_max_iters: int | None = None
    deer_quasi: bool = False

    def __post_init__(self):
        if self.impl not in IMPLS:
            raise ValueError(f"impl: expected one of {list(IMPLS)}, got {self.impl!r}")
        if self.unroll != "auto" and not _is_positive_int(self.unroll):
            raise ValueError(f"unroll: expected a positive int or 'auto', got {self.unroll!r}")
        if not isinstance(self.hoist, bool):
            raise ValueError(f"hoist: expected a bool, got {self.hoist!r}")
        for name in ("remat", "chunk_length", "deer_max_iters"):
            value = getattr(self, name)
            if value is not None and not _is_positive_int(value):
                raise ValueError(f"{name}: expected None or a positive int, got {value!r}")
        tol = self.deer_tol
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 0:
            raise ValueError(f"deer_tol: expected a positive float, got {tol!r}")
        if not isinstance(self.deer_quasi, bool):
            raise ValueError(f"deer_quasi: expected a bool, got {self.deer_quasi!r}")

    def replace(self, **changes) -> Engine:
        """A copy with ``changes``; an unknown field is an error naming it."""
        _checks.check_unknown("engine options", changes, FIELDS)
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(Engine))


def resolve(engine: Engine | None, **options) -> Engine:
    """``engine`` (default ``Engine()``) with the keyword ``options`` applied."""
    if engine is not None and not isinstance(engine, Engine):
        raise ValueError(f"engine: expected an rj.Engine or None, got {engine!r}")
    engine = Engine() if engine is None else engine
    return engine.replace(**options) if options else engine


def _is_positive_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1
