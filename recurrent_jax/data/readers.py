"""Reading files that someone else may have made.

Data files are shared and downloaded, so a file is read as if it were
hostile:

- only regular files are opened (a FIFO, a device such as ``/dev/zero`` or
  ``/dev/urandom``, a socket or a folder would block or never end);
- NumPy arrays are read without pickles (``allow_pickle=False``): an object
  array is refused from its header, before anything of it is read;
- the shapes a ``.npy`` header declares are checked against the bytes the
  file (or the ``.npz`` member) holds and against a memory budget before
  anything is decompressed or allocated;
- text is UTF-8 without NUL bytes.

Every failure is a one-line ``DataError`` naming the file. Any command that
reads a researcher's arrays or texts goes through these readers.
"""

from __future__ import annotations

import contextlib
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from recurrent_jax.data.base import DataError

GIB = 2**30
MAX_GIB = 8.0  # the default budget of the arrays one data file may declare
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, an empty archive
# damaged, truncated, encrypted or of a compression method zipfile lacks
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    zipfile.BadZipFile,
)
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
    (3, 0): np.lib.format.read_array_header_2_0,  # 2.0's layout, a UTF-8 header
}


def one_line(error: BaseException) -> str:
    """An exception's text on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def open_regular(path, what: str):
    """``path`` opened for binary reading if it is a regular file (after
    symlinks); a one-line ``DataError`` beginning with ``what`` otherwise."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # a FIFO then opens without waiting
    try:
        fd = os.open(path, os.O_RDONLY | nonblocking)
    except FileNotFoundError:
        raise DataError(f"{what}: no such file {str(path)!r}") from None
    except OSError as error:
        raise DataError(f"{what}: cannot open {str(path)!r} ({error.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DataError(f"{what}: expected a regular file, got {_kind(mode)}: {str(path)!r}")
    if nonblocking:
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_text_file(path, what: str) -> str:
    """The UTF-8 text of the regular file ``path``: non-UTF-8 bytes or NUL
    bytes (a binary file) are a one-line ``DataError``."""
    with open_regular(path, what) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{what}: {str(path)!r} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
            f"{error.start}); convert it to UTF-8 (iconv -t utf-8)"
        ) from None
    if "\0" in text:
        raise DataError(
            f"{what}: {str(path)!r} holds NUL bytes (at offset {raw.index(0)}): a binary file, "
            "not text"
        )
    return text


# --- NumPy arrays --------------------------------------------------------------------


class Budget:
    """The bytes that arrays read so far may still take."""

    def __init__(self, max_gib: float):
        self.max_gib, self.left = max_gib, int(max_gib * GIB)

    def take(self, label: str, shape: tuple, dtype: np.dtype, nbytes: int) -> None:
        if nbytes > self.left:
            raise DataError(
                f"{label}: declares {dtype}{list(shape)} ({nbytes / GIB:.3g} GiB), more than the "
                f"{self.max_gib:g} GiB data.max_gib allows for the file's arrays; raise "
                "data.max_gib if the data is meant to be that large"
            )
        self.left -= nbytes


def _header(f, label: str) -> tuple[tuple, np.dtype, int, int]:
    """(shape, dtype, header bytes, data bytes) of the ``.npy`` stream ``f``,
    read from its header alone; object arrays are refused here."""
    version = np.lib.format.read_magic(f)
    if version not in _HEADER_READERS:
        raise ValueError(f"unknown .npy format version {version}")
    shape, _, dtype = _HEADER_READERS[version](f)
    if dtype.hasobject:
        raise DataError(
            f"{label}: an object array (ragged rows, or Python objects: reading it would "
            "unpickle, which is never done); pad it to one shape of numbers and give the "
            "valid steps in lengths"
        )
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimensions in the shape {shape}")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    return shape, dtype, f.tell(), nbytes


def _checked_array(f, label: str, size: int, budget: Budget, *, exact: bool) -> np.ndarray:
    """The array of the ``.npy`` stream ``f`` of ``size`` bytes, its header
    checked first (``exact``: the stream holds nothing after the data)."""
    shape, dtype, header, nbytes = _header(f, label)
    if header + nbytes > size or (exact and header + nbytes != size):
        raise DataError(
            f"{label}: truncated or damaged: its header declares {dtype}{list(shape)} "
            f"({nbytes} bytes of data) but it holds {size - header}"
        )
    budget.take(label, shape, dtype, nbytes)
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def read_npy(path, what: str, budget: Budget) -> np.ndarray:
    """The array of the ``.npy`` file ``path`` (header checked first, no
    pickles); ``what`` names it in errors."""
    with open_regular(path, what) as f, _errors(path, ".npy array"):
        return _checked_array(f, str(path), os.fstat(f.fileno()).st_size, budget, exact=False)


def read_npz(path, what: str, names: tuple, budget: Budget) -> dict:
    """The arrays ``names`` of the ``.npz`` file ``path`` that it holds
    (``x`` for the member ``x.npy``; absent names are left out), each
    member's header checked before it is decompressed, no pickles."""
    with open_regular(path, what) as f:
        start = f.read(len(_NPY_MAGIC))
        if not start.startswith(_ZIP_MAGICS):
            got = "a .npy file" if start == _NPY_MAGIC else "neither a zip archive nor .npy"
            raise DataError(
                f"{path}: expected a .npz file (a zip archive of .npy files), got {got}"
            )
        f.seek(0)
        with _errors(path, ".npz file"), zipfile.ZipFile(f) as archive:
            members = {n.removesuffix(".npy"): n for n in archive.namelist()}
            return {
                name: _member(archive, members[name], f"{path}: {name}", budget)
                for name in names
                if name in members
            }


def _member(archive: zipfile.ZipFile, member: str, label: str, budget: Budget) -> np.ndarray:
    size = archive.getinfo(member).file_size
    with archive.open(member) as f:
        array = _checked_array(f, label, size, budget, exact=True)
        f.read(1)  # at the end of the member: its CRC is checked
    return array


@contextlib.contextmanager
def _errors(path, what: str):
    """The readers' failures (damaged, truncated, not what its name says)
    as one line naming ``path``."""
    try:
        yield
    except DataError:
        raise
    except _READ_ERRORS as error:
        raise DataError(f"{path}: cannot be read as a {what} ({one_line(error)})") from None


def exists(path: Path) -> bool:
    """Whether anything is at ``path`` (a dangling symlink counts, so that
    it is reported rather than taken for a missing optional file)."""
    return os.path.lexists(path)
