"""JAX's compilation across processes and sweeps: the persistent
compilation cache, and a counter of compilations for tests and benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

import jax


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache (kept where JAX already
    has one, e.g. from ``JAX_COMPILATION_CACHE_DIR``); default directory
    ``$XDG_CACHE_HOME/recurrent_jax/jax`` (``~/.cache/...``)."""
    from jax.experimental.compilation_cache import compilation_cache

    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    if directory is None:
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        directory = Path(root) / "recurrent_jax" / "jax"
    Path(directory).mkdir(parents=True, exist_ok=True)
    compilation_cache.set_cache_dir(str(directory))
    compilation_cache.reset_cache()  # re-read the directory if the cache was initialised
    return Path(directory)


class CompileCounter:
    """Counts XLA compilations (persistent-cache hits included) while
    active, by jitted function name: ``with CompileCounter() as c: ...;
    c.count("sweep_")``."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.names: list[str] = []

    def _listener(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.names.append(str(kwargs.get("fun_name", "")))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)

    def count(self, contains: str = "") -> int:
        return sum(contains in name for name in self.names)
