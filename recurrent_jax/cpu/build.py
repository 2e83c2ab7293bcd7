"""Builds ``rnn.cc`` (with the headers beside it) once per machine and
registers its FFI targets.

The shared library lands in ``$RECURRENT_JAX_CACHE`` (default
``~/.cache/recurrent_jax``), named by a hash of the sources, the compiler
flags, jaxlib's version and the processor (it is built with
``-march=native``), so a changed source or machine builds anew.

``RECURRENT_JAX_SANITIZE=1`` builds a copy under AddressSanitizer and
UBSan instead (any finding aborts the process); the process must then load
the sanitizer's runtime first, ``LD_PRELOAD=$(c++ -print-file-name=libasan.so)``
(``tests/test_cpu_sanitized.py`` runs the backend's tests so).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jaxlib

SOURCE = Path(__file__).with_name("rnn.cc")
HEADERS = sorted(SOURCE.parent.glob("*.h"))
# -ffast-math lets the gate loops call glibc's vector expf / tanhf; it is
# given to the compile step only, so that the link does not add crtfastmath,
# which would flush subnormals to zero for the whole process on load.
# -D_GLIBCXX_ASSERTIONS bounds-checks the standard containers, at little cost.
# On x86, gcc's -march=native for AVX-512 CPUs prefers 256-bit vectors; the
# GEMMs' 8 x 32 register blocks then need twice the registers there are and
# ran at a third of the speed (gcc 12, Ice Lake), so 512 bits are asked for.
COMPILE = [
    "-O3",
    "-march=native",
    "-ffast-math",
    "-std=c++17",
    "-fPIC",
    "-w",
    "-D_GLIBCXX_ASSERTIONS",
    "-c",
] + (["-mprefer-vector-width=512"] if platform.machine() in ("x86_64", "AMD64") else [])
LINK = ["-shared", "-pthread"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
TARGETS = {
    "recurrent_jax_lstm_forward": "RjLstmForward",
    "recurrent_jax_lstm_backward": "RjLstmBackward",
    "recurrent_jax_lstm_infer": "RjLstmInfer",
    "recurrent_jax_gru_forward": "RjGruForward",
    "recurrent_jax_gru_backward": "RjGruBackward",
    "recurrent_jax_gru_infer": "RjGruInfer",
}


def unavailable() -> str | None:
    """Why the extension cannot run here, or None once it is registered."""
    return _load()


def library_path() -> Path | None:
    """The shared library registered in this process (None when unavailable)."""
    return None if _load() is not None else _LOADED[0]


_LOADED: list[Path] = []


@functools.cache
def _load() -> str | None:
    if os.environ.get("RECURRENT_JAX_NO_CPU_EXTENSION"):
        return "the CPU extension is switched off (RECURRENT_JAX_NO_CPU_EXTENSION)"
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        return "no C++ compiler (c++, g++ or $CXX) to build the CPU extension"
    try:
        path = _build(compiler)
        library = ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as error:
        return f"the CPU extension did not build: {_tail(error)}"
    for name, symbol in TARGETS.items():
        capsule = jax.ffi.pycapsule(getattr(library, symbol))
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    _LOADED.append(path)
    return None


def _flags() -> tuple[list[str], list[str]]:
    """(compile, link) flags: the sanitizers' too with ``RECURRENT_JAX_SANITIZE``."""
    extra = SANITIZE if os.environ.get("RECURRENT_JAX_SANITIZE") else []
    return [*COMPILE, *extra], [*LINK, *extra]


def _build(compiler: str) -> Path:
    text = b"".join(path.read_bytes() for path in [SOURCE, *HEADERS])
    compile_flags, link_flags = _flags()
    key = hashlib.sha256(
        text
        + " ".join(compile_flags + link_flags).encode()
        + jaxlib.__version__.encode()
        + _processor().encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("RECURRENT_JAX_CACHE", Path.home() / ".cache" / "recurrent_jax"))
    target = cache / f"rnn-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        obj, partial = Path(tmp) / "rnn.o", Path(tmp) / target.name
        include = [f"-I{jax.ffi.include_dir()}", f"-I{SOURCE.parent}"]
        for command in (
            [compiler, *compile_flags, *include, str(SOURCE), "-o", str(obj)],
            [compiler, *link_flags, str(obj), "-o", str(partial)],
        ):
            subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, target)  # atomic: concurrent builds leave one whole file
    return target


def _processor() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    return platform.machine() + "".join(wanted)


def _tail(error) -> str:
    text = getattr(error, "stderr", None) or str(error)
    return text.strip().splitlines()[-1][:300] if text.strip() else repr(error)
