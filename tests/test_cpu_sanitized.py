"""The CPU backend under AddressSanitizer and UBSan: its numerical tests
and the wrong-shape cases of ``native_fuzz.py`` run on a sanitized build
(``RECURRENT_JAX_SANITIZE=1``), and no sanitizer reports anything.

The sanitized extension is loaded into a Python that is not, so the
sanitizer's runtime (and libstdc++, whose ``__cxa_throw`` ASan wraps) is
preloaded; leak checking is off (Python and jaxlib keep memory to exit).
Reports go to files (pytest captures the stderr an aborting process would
write them to), and any report fails the test with its text.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from recurrent_jax import cpu

HERE = Path(__file__).parent


def _runtime(name: str) -> str | None:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        return None
    found = subprocess.run(
        [compiler, f"-print-file-name={name}"], capture_output=True, text=True
    ).stdout.strip()
    return found if os.path.isabs(found) and os.path.exists(found) else None


ASAN, LIBSTDCXX = _runtime("libasan.so"), _runtime("libstdc++.so")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        jax.default_backend() != "cpu" or cpu.unavailable() is not None,
        reason=f"the CPU extension does not run here: {cpu.unavailable()}",
    ),
    pytest.mark.skipif(ASAN is None or LIBSTDCXX is None, reason="no sanitizer runtime here"),
]


def sanitized_env(reports: Path) -> dict:
    """The environment of a sanitized run whose reports land in ``reports``."""
    log = f"log_path={reports / 'sanitizer'}"
    return dict(
        os.environ,
        RECURRENT_JAX_SANITIZE="1",
        LD_PRELOAD=f"{ASAN} {LIBSTDCXX}",
        ASAN_OPTIONS=f"detect_leaks=0:{log}",
        UBSAN_OPTIONS=f"print_stacktrace=1:{log}",
    )


def reports_in(directory: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(directory.glob("sanitizer*")))


def test_the_sanitized_build_is_the_one_loaded(tmp_path):
    probe = (
        "from recurrent_jax.cpu import build; assert build.unavailable() is None, "
        "build.unavailable(); print(build.library_path())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=sanitized_env(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    library = done.stdout.strip().splitlines()[-1]
    linked = subprocess.run(["ldd", library], capture_output=True, text=True).stdout
    assert "libasan" in linked and "libubsan" in linked, linked


def test_cpu_backend_tests_are_clean_under_the_sanitizers(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", str(HERE / "test_cpu_backend.py")],
        capture_output=True,
        text=True,
        env=sanitized_env(tmp_path),
        cwd=HERE.parent,
        timeout=1800,  # under ASan, on a shared 2-core machine
    )
    output = done.stdout + done.stderr
    assert not reports_in(tmp_path), reports_in(tmp_path)
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"\b(\d+) passed\b", output) and "skipped" not in output, output[-2000:]


def test_wrong_shapes_are_clean_under_the_sanitizers(tmp_path):
    from native_fuzz import cases
    from test_cpu_fuzz import failures, run_cases

    every_third = list(range(0, len(cases()), 3))
    verdicts = run_cases(every_third, env=sanitized_env(tmp_path))
    assert not reports_in(tmp_path), reports_in(tmp_path)
    assert not failures(verdicts), "\n".join(failures(verdicts))
    assert len(verdicts) == len(every_third)
