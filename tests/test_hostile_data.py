"""Data files made by someone else, or made wrong: every crafted file is
built here, small on disk, and each either reads exactly as its honest
twin or is refused in one line before anything runs, hangs, overflows or
fills the memory.

Oracles: a crafted pickle is first shown to run its payload under
``np.load(allow_pickle=True)`` (so a test that passes is not one that
cannot fail); files with anything in their padding read as the same file
with zeros there; sizes are checked in a subprocess under
``resource.setrlimit``."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from _helpers import ARRAYS_CONFIG

pytest.importorskip("ml_collections")

import recurrent_jax as rj  # noqa: E402
from recurrent_jax import cli  # noqa: E402
from recurrent_jax.data import arrays as arrays_task  # noqa: E402
from recurrent_jax.data import corpora, files, readers, text  # noqa: E402
from recurrent_jax.data.base import DataError  # noqa: E402


def cli_error(tmp_path, capsys, *overrides) -> str:
    """The one-line error of training the arrays config with ``overrides``;
    the run directory is never made."""
    config = tmp_path / "mine.py"
    config.write_text(ARRAYS_CONFIG)
    workdir = tmp_path / "run"
    argv = ["train", f"--config={config}", *overrides, f"--workdir={workdir}", "--no-progress"]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and err.startswith("recurrent-jax: error:") and "\n" not in err, err
    assert not workdir.exists()
    return err


def read(path, **options) -> files.Arrays:
    columns = arrays_task.ArraysOptions(**options).columns()
    return files.read_arrays(path, columns, max_gib=options.get("max_gib", readers.MAX_GIB))


def refused(call, *fragments) -> str:
    """The one-line DataError of ``call()``, holding every fragment."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


def ends_within(seconds: float, call):
    """The exception ``call()`` raises, in a thread that must end within
    ``seconds``: a reader that blocks fails the test instead of hanging it."""
    raised = []

    def run():
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            raised.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the read blocked"
    return raised[0] if raised else None


def refused_within(call, *fragments) -> str:
    error = ends_within(20, call)
    message = str(error)
    assert isinstance(error, DataError) and "\n" not in message, repr(error)
    assert all(f in message for f in fragments), message
    return message


def _data(rng, n=12, t=5, d=2):
    x = rng.standard_normal((n, t, d)).astype(np.float32)
    return x, np.arange(n) % 3, rng.integers(1, t + 1, n)


# --- §0: no reader unpickles --------------------------------------------------------


class Payload:
    """Unpickling this creates ``marker``: the proof that a reader ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _crafted(where: str, name: str, folder: Path, marker: Path, rng) -> Path:
    x, y, lengths = _data(rng)
    arrays = {"x": x, "y": y, "lengths": lengths}
    arrays[name] = np.array([Payload(marker), 0], dtype=object)
    if where == "npz":
        np.savez(folder / "data.npz", **arrays)
        return folder / "data.npz"
    if where == "pickle named .npz":
        (folder / "data.npz").write_bytes(pickle.dumps(Payload(marker)))
        return folder / "data.npz"
    (folder / "data").mkdir()
    for key, value in arrays.items():
        np.save(folder / "data" / f"{key}.npy", value, allow_pickle=True)
    if where == "pickle named x.npy":
        (folder / "data" / "x.npy").write_bytes(pickle.dumps(Payload(marker)))
    return folder / "data"


def _run_with_pickles(path: Path) -> None:
    """What a reader with allow_pickle=True does to ``path``."""
    with contextlib.suppress(Exception):
        if path.is_dir():
            for file in path.glob("*.npy"):
                np.load(file, allow_pickle=True)
        else:
            loaded = np.load(path, allow_pickle=True)
            if hasattr(loaded, "files"):
                [loaded[k] for k in loaded.files]


@pytest.mark.parametrize(
    "where, name",
    [
        *[(w, n) for w in ("npz", ".npy folder") for n in ("x", "y", "lengths")],
        ("pickle named .npz", "x"),
        ("pickle named x.npy", "x"),
    ],
)
def test_a_pickled_payload_never_runs(where, name, tmp_path, rng, capsys):
    marker = tmp_path / "payload_ran"
    path = _crafted(where, name, tmp_path, marker, rng)
    err = cli_error(tmp_path, capsys, f"--config.data.path={path}")
    assert not marker.exists(), "a data file ran code"
    assert (
        ("object array" in err and "lengths" in err)
        or "expected a .npz file" in err
        or ("cannot be read as a .npy array" in err)
    ), err
    _run_with_pickles(path)  # the oracle: the crafted file is live
    assert marker.exists()


def test_inputs_alone_read_with_the_same_checks(tmp_path, rng):
    """``read_arrays(targets=False)``: inputs to predict on, no y needed."""
    x, _, lengths = _data(rng)
    np.savez(tmp_path / "inputs.npz", x=x, lengths=lengths)
    got = files.read_arrays(
        tmp_path / "inputs.npz", arrays_task.ArraysOptions().columns(), targets=False
    )
    valid = (np.arange(5)[None] < lengths[:, None])[..., None]
    np.testing.assert_array_equal(got.x, np.where(valid, x, 0))
    assert got.y is None
    marker = tmp_path / "payload_ran"
    np.savez(tmp_path / "bad.npz", x=np.array([Payload(marker)], dtype=object))
    columns = arrays_task.ArraysOptions().columns()
    read_inputs = lambda: files.read_arrays(tmp_path / "bad.npz", columns, targets=False)  # noqa: E731
    refused(read_inputs, "bad.npz: x: an object array")
    assert not marker.exists()


# --- §5 (issue 35): only regular files ----------------------------------------------


@pytest.mark.parametrize("where", ["x.npz", "x.csv", "folder/x.npy", "x.txt", "class/a.txt"])
def test_fifos_are_refused_without_blocking(where, tmp_path):
    path = tmp_path / where
    path.parent.mkdir(exist_ok=True)
    os.mkfifo(path)
    if where.endswith(".txt") and "/" in where:
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "b.txt").write_text("fine")
        call = lambda: corpora.read_class_folders(str(tmp_path))  # noqa: E731
    elif where.endswith(".txt"):
        call = lambda: text.read_text(str(path))  # noqa: E731
    else:
        call = lambda: read(path.parent if "/" in where else path)  # noqa: E731
    refused_within(call, "expected a regular file, got a FIFO")


def test_dev_zero_as_the_text_is_refused_in_one_line():
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    build = lambda: text.build_text(text.TextOptions(path="/dev/zero"))  # noqa: E731
    refused(build, "config.data.path: expected a regular file, got a character device")


DEVICE_SCRIPT = """
import sys
from recurrent_jax.data import files, text
from recurrent_jax.data.arrays import ArraysOptions
from recurrent_jax.data.base import DataError
for path in sys.argv[1:]:
    try:
        if path.endswith((".csv", ".npz")):
            files.read_arrays(path, ArraysOptions().columns())
        else:
            text.read_text(path)
    except DataError as error:
        print(error)
"""


@pytest.mark.slow  # a subprocess that imports JAX: a reader that spins is killed with it
def test_devices_named_as_data_are_refused(tmp_path):
    if not os.path.exists("/dev/urandom"):
        pytest.skip("no /dev/urandom")
    (tmp_path / "x.csv").symlink_to("/dev/urandom")
    (tmp_path / "x.npz").symlink_to("/dev/zero")
    paths = [str(tmp_path / "x.csv"), str(tmp_path / "x.npz"), "/dev/zero"]
    out = subprocess.run(
        [sys.executable, "-c", DEVICE_SCRIPT, *paths], capture_output=True, text=True, timeout=120
    )
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 3, out.stderr[-2000:]
    for line in lines[:2]:
        assert "expected a regular file, got a character device" in line, line
    assert lines[2].startswith("config.data.path: expected a regular file"), lines[2]


# --- §6, §7 (issue 35): damaged files and declared sizes ---------------------------------


def _npy_header(shape, dtype="<f4") -> bytes:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    body = repr(header).encode("latin1")
    body += b" " * (63 - (len(body) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def test_damaged_and_mislabelled_npz_files(tmp_path, rng):
    x, y, lengths = _data(rng)
    good = arrays_task.save_arrays(tmp_path / "good.npz", x, y, lengths)
    raw = good.read_bytes()
    crc = bytearray(raw)
    start = raw.index(b"\x93NUMPY") + 200  # inside x's data (the archive stores, not deflates)
    crc[start] ^= 0xFF
    cases = {
        "bad_crc.npz": (bytes(crc), "Bad CRC-32"),
        "truncated.npz": (raw[: len(raw) // 2], "cannot be read as a .npz file"),
        "text.npz": (b"x,y\n1,2\n", "neither a zip archive nor .npy"),
        "npy.npz": (_npy_header((2,)) + bytes(8), "got a .npy file"),
        "empty.npz": (b"", "neither a zip archive nor .npy"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        refused(lambda: read(tmp_path / name), name, message)  # noqa: B023
    np.testing.assert_array_equal(read(good).x[0, : lengths[0]], x[0, : lengths[0]])


def test_declared_shapes_are_checked_before_anything_is_read(tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "x.npy").write_bytes(_npy_header((2**20, 2**20, 1)) + bytes(64))  # 4 TiB
    (folder / "y.npy").write_bytes(_npy_header((2**20,), "<i8") + bytes(64))
    refused(lambda: read(folder), "x.npy", "truncated or damaged", "float32[1048576, 1048576, 1]")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("x.npy", _npy_header((2**30, 8, 1)) + bytes(64))
        archive.writestr("y.npy", _npy_header((2**30,), "<i8") + bytes(64))
    refused(lambda: read(tmp_path / "huge.npz"), "huge.npz: x", "truncated or damaged")


MEMORY_SCRIPT = """
import resource, sys
import numpy as np
from recurrent_jax.data import files
from recurrent_jax.data.arrays import ArraysOptions
from recurrent_jax.data.base import DataError

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

limit = vm_bytes() + 768 * 2**20  # the process now, and 768 MiB more
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for path, max_gib in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        files.read_arrays(path, ArraysOptions().columns(), max_gib=float(max_gib))
        print("read", path)
    except DataError as error:
        print(error)
"""


def _zeros_npz(path: Path, count: int) -> Path:
    """A .npz whose x of ``count`` float32 zeros compresses to almost nothing."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((count // 64, 64, 1)))
            chunk = bytes(2**22)
            for _ in range(count * 4 // len(chunk)):
                member.write(chunk)
        archive.writestr("y.npy", _npy_header((count // 64,), "<i8") + bytes(count // 8))
    return path


@pytest.mark.slow  # a subprocess that imports JAX
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmSize from /proc")
def test_memory_limits_hold_under_setrlimit(tmp_path):
    """Under a memory limit of 768 MiB beyond the process: a bomb of 128 MiB
    of zeros over data.max_gib is refused from its header, a 2 GiB sparse
    file that fits its declared size is a one-line out-of-memory error, and
    a long table whose padding would take 11 GiB is refused before it is
    padded."""
    bomb = _zeros_npz(tmp_path / "bomb.npz", 2**25)  # 128 MiB of zeros in ~0.6 MB
    assert bomb.stat().st_size < 2**20
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    with open(sparse / "x.npy", "wb") as f:
        f.write(_npy_header((2**23, 64, 1)))
        f.truncate(f.tell() + 2**31)  # 2 GiB of holes: nothing on disk
    np.save(sparse / "y.npy", np.zeros(2**23, np.int8))
    table = tmp_path / "long.csv"
    rows = ["id,time,a,b,target"] + [f"{i},0,1,2,0" for i in range(10_000)]
    rows += [f"10000,{t},1,2,0" for t in range(100_000)]
    table.write_text("\n".join(rows))
    argv = [str(bomb), "0.1", str(sparse), "8", str(table), "8"]
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, *argv], capture_output=True, text=True, timeout=300
    )
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 3, out.stderr[-3000:]
    assert "bomb.npz: x: declares float32[524288, 64, 1] (0.125 GiB)" in lines[0], lines[0]
    assert "data.max_gib" in lines[0]
    assert "sparse: not enough memory to read its arrays" in lines[1], lines[1]
    assert "padding its 10001 series to the longest (100000 steps) with 2 features" in lines[2]


# --- §2 (issue 34), §4 (issue 35): values -------------------------------------------------


def test_values_past_each_length_are_never_read(tmp_path, rng):
    """NaN features and -7 class ids in the padding read as zeros there:
    as the honest file with zeros in its padding."""
    x, y, lengths = _data(rng)
    valid = np.arange(5)[None] < lengths[:, None]
    classes = np.arange(12)[:, None] % 3 * np.ones((1, 5), int)
    honest = read(
        arrays_task.save_arrays(
            tmp_path / "honest.npz", np.where(valid[..., None], x, 0), np.where(valid, classes, 0)
        )
    )
    noisy = arrays_task.save_arrays(
        tmp_path / "noisy.npz",
        np.where(valid[..., None], x, np.nan),
        np.where(valid, classes, -7),
        lengths,
    )
    got = read(noisy)
    np.testing.assert_array_equal(got.x, honest.x)
    np.testing.assert_array_equal(got.y, honest.y)
    inside = np.where(valid[..., None], x, np.nan)
    inside[3, 0, 1] = np.inf
    path = arrays_task.save_arrays(tmp_path / "inside.npz", inside, y, lengths)
    refused(lambda: read(path), "x: expected finite numbers", "row 3, step 0, feature 1")


def test_floats_that_overflow_float32_name_where(tmp_path, rng):
    x, y, lengths = _data(rng)
    big = x.astype(np.float64)
    big[4, 0, 1] = 1e300
    path = arrays_task.save_arrays(tmp_path / "big.npz", big, y)
    refused(
        lambda: read(path), "big.npz: x", "1e+300 overflows float32", "row 4, step 0, feature 1"
    )
    target = rng.standard_normal((12, 2))
    target[7, 1] = -1e300
    path = arrays_task.save_arrays(tmp_path / "target.npz", x, target)
    refused(lambda: read(path), "target.npz: y", "-1e+300 overflows", "row 7, output 1")


@pytest.mark.parametrize(
    "where, value, fragment",
    [
        ("x", 2**31, "x: expected token ids < 2^31 (int32), got 2147483648 at row 2, step 1"),
        ("x", -1, "x: expected token ids >= 0, got -1 at row 2, step 1"),
        ("y", 2**31, "y: expected class ids < 2^31 (int32), got 2147483648 at row 2"),
        ("y", 2**40, "y: expected class ids < 2^31 (int32), got 1099511627776 at row 2"),
    ],
)
def test_ids_are_checked_before_the_cast_to_int32(where, value, fragment, tmp_path, rng):
    ids, y = rng.integers(0, 9, (12, 5)), np.arange(12) % 3
    (ids if where == "x" else y)[(2, 1) if where == "x" else 2] = value
    path = arrays_task.save_arrays(tmp_path / "ids.npz", ids, y)
    refused(lambda: read(path), fragment)


@pytest.mark.parametrize(
    "labels, options, fragment",
    [
        ([1, 2, 3, 4], {}, "got the ids [1, 2, 3, 4] (1 of 0..4 absent: [0]); remap them to 0..3"),
        ([0, 2, 5], {}, "(3 of 0..5 absent: [1, 3, 4])"),
        ([0, 1, 2], {"num_classes": 2}, "expected class ids < data.num_classes=2, got [2]"),
    ],
)
def test_class_ids_are_0_to_c_minus_1(labels, options, fragment, tmp_path, rng):
    x, _, _ = _data(rng)
    path = arrays_task.save_arrays(tmp_path / "c.npz", x, np.resize(labels, 12))
    build = lambda: rj.data.get_task("arrays").build(  # noqa: E731
        arrays_task.ArraysOptions(path=str(path), **options)
    )
    refused(build, "c.npz: y: expected class ids", fragment)


def test_num_classes_states_classes_absent_on_purpose(tmp_path, rng):
    x, _, _ = _data(rng)
    path = arrays_task.save_arrays(tmp_path / "c.npz", x, np.resize([1, 2, 3, 4], 12))
    assert _build(path=str(path), num_classes=5).output_size == 5
    # per step, class 0 only in the padding is not a class that was seen
    padded = np.where(np.arange(5) < 3, np.resize([1, 2], (12, 5)), 0)
    path = arrays_task.save_arrays(tmp_path / "s.npz", x, padded, np.full(12, 3))
    refused(lambda: _build(path=str(path)), "got the ids [1, 2]")


def _build(**options):
    return rj.data.get_task("arrays").build(arrays_task.ArraysOptions(**options))


@pytest.mark.parametrize(
    "shape, fragment", [((12, 0, 2), "float64[12, 0, 2]"), ((12, 5, 0), "float64[12, 5, 0]")]
)
def test_x_without_steps_or_features_is_refused(shape, fragment, tmp_path):
    path = arrays_task.save_arrays(tmp_path / "e.npz", np.zeros(shape), np.zeros(12, int))
    refused(lambda: read(path), "x: expected float features (N, T, D)", "size >= 1", fragment)


def test_the_held_out_file_alone_is_checked(tmp_path, rng):
    ids, y = rng.integers(0, 20, (12, 5)), np.arange(12) % 3
    train = arrays_task.save_arrays(tmp_path / "train.npz", ids, y)
    wide = ids.copy()
    wide[5, 3] = 20
    held = arrays_task.save_arrays(tmp_path / "held.npz", wide, y)
    options = {"path": str(train), "eval_path": str(held), "vocab_size": 20}
    refused(lambda: _build(**options), "held.npz: x: expected token ids < data.vocab_size=20")
    assert _build(**{**options, "vocab_size": 21}).input_vocab == 21
    x, y, _ = _data(rng)
    nan = x.copy()
    nan[2, 4, 0] = np.nan
    held = arrays_task.save_arrays(tmp_path / "nan.npz", nan, y)
    train = arrays_task.save_arrays(tmp_path / "xtrain.npz", x, y)
    refused(lambda: _build(path=str(train), eval_path=str(held)), "nan.npz: x", "row 2, step 4")


def test_every_training_row_is_drawn_evenly(tmp_path):
    """5 rows, 20,000 draws: each row's count is binomial(20000, 1/5), mean
    4000 and standard deviation 56.6; 6 standard deviations bound it."""
    x = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 3, 1), np.float32)
    train = arrays_task.save_arrays(tmp_path / "five.npz", x, np.arange(5) % 2)
    held = arrays_task.save_arrays(tmp_path / "held.npz", x[:2], np.arange(2))
    spec = _build(path=str(train), eval_path=str(held), normalize=False)
    draws = np.asarray(spec.sample_train(jax.random.key(0), 20_000).xs[:, 0, 0]).astype(int)
    counts = np.bincount(draws, minlength=5)
    assert abs(counts - 4000).max() < 6 * np.sqrt(20_000 * 0.2 * 0.8), counts


def _write_table(path: Path, columns: dict):
    pa = pytest.importorskip("pyarrow")
    table = pa.table(columns)
    if path.suffix == ".csv":
        import pyarrow.csv

        pyarrow.csv.write_csv(table, path)
    else:
        import pyarrow.parquet

        pyarrow.parquet.write_table(table, path)
    return path


def test_long_tables_refuse_what_would_be_silently_wrong(tmp_path):
    base = {"id": [0, 0, 1, 1], "time": [0, 1, 0, 1], "a": [1.0, 2.0, 3.0, 4.0]}
    cases = {
        "empty id": (
            {"id": ["s1", "", "s2", " "]},
            "column 'id': expected an id in every row",
            "rows [1, 3]",
        ),
        "overflow": (
            {"a": [1.0, 1e300, 3.0, 4.0]},
            "column 'a'",
            "1e+300 overflows float32",
            "row 1",
        ),
        "string target": (
            {"target": ["cat", "dog", "cat", "dog"]},
            "got strings (such as 'cat')",
            "map the classes to ids",
        ),
        "huge target": ({"target": [0, 2**40, 0, 0]}, "expected class ids < 2^31 (int32)"),
    }
    for name, (override, *fragments) in cases.items():
        columns = {**base, "target": [0, 0, 1, 1], **override}
        path = _write_table(tmp_path / f"{name.replace(' ', '_')}.csv", columns)
        refused(lambda: read(path, target_per_step=True), *fragments)  # noqa: B023
    pa = pytest.importorskip("pyarrow")
    listed = {**base, "target": pa.array([[0], [0, 1], [1], [1]])}
    path = _write_table(tmp_path / "lists.parquet", listed)
    refused(lambda: read(path), "column 'target': expected one number per row, got list<")
    big = _write_table(tmp_path / "big.parquet", {**base, "target": [0, 0, 2**40, 2**40]})
    refused(lambda: read(big), "y: expected class ids < 2^31 (int32)")


def test_malformed_csv_is_named_by_line_without_its_data(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text('id,time,a,target\n0,0,1,0\n0,1,"secret,0\n1,0,3,1\n')
    message = refused(lambda: read(path), "quote.csv", "line 3: expected 4 columns, got 3")
    assert "secret" not in message
    (tmp_path / "header.csv").write_text("id,time,a,target\n")
    refused(lambda: read(tmp_path / "header.csv"), "holds no rows, only a header")


# --- texts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"caf\xe9 au lait", "is not UTF-8 text (byte 0xe9 at offset 3)"),
        (b"\x00\x01\x02binary\x00", "holds NUL bytes (at offset 0): a binary file"),
    ],
)
def test_text_that_is_not_utf8_is_refused(content, fragment, tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    refused(lambda: text.build_text(text.TextOptions(path=str(path))), "config.data.path", fragment)
    (tmp_path / "classes" / "a").mkdir(parents=True)
    (tmp_path / "classes" / "a" / "1.txt").write_bytes(content)
    refused(lambda: corpora.read_class_folders(str(tmp_path / "classes")), fragment)


def test_data_tokens_lists_the_choices():
    refused(
        lambda: rj.data.tokens.make_tokenizer("word", ["a b"], None),
        "data.tokens: expected 'chars', 'words' or a pretrained tokenizer's hub name",
        "got 'word' (did you mean 'words'?)",
    )


def test_a_pretrained_tokenizer_is_loaded_without_code_from_the_hub(monkeypatch):
    """Through transformers (without tokenizers installed): the hub's
    code is never trusted, whatever transformers' default."""
    import types

    asked = []

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(name, **options):
            asked.append((name, options))
            raise OSError("offline")

    monkeypatch.setitem(sys.modules, "tokenizers", None)
    monkeypatch.setitem(
        sys.modules, "transformers", types.SimpleNamespace(AutoTokenizer=AutoTokenizer)
    )
    refused(
        lambda: rj.data.tokens.make_tokenizer("org/tok", ["a b"], None),
        "no tokenizer 'org/tok' could be loaded (offline)",
    )
    assert asked == [("org/tok", {"trust_remote_code": False})]


def test_class_folders_are_the_folders_that_hold_texts(tmp_path):
    root = tmp_path / "data"
    for name, texts in {"neg": ["bad", "awful"], "pos": ["good", "great"]}.items():
        (root / name).mkdir(parents=True)
        for i, t in enumerate(texts):
            (root / name / f"{i}.txt").write_text(t)
    honest = corpora.read_class_folders(str(root))
    run = root / "runs" / "run-1"  # a run directory made inside the data folder
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (root / "notes").mkdir()
    (root / "notes" / "readme.md").write_text("not a class")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.txt").write_text("hidden")
    (root / "to_a_file").symlink_to(root / "neg" / "0.txt")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    assert corpora.read_class_folders(str(root)) == honest
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "m.txt").write_text("meh")
    (root / "zz_linked").symlink_to(tmp_path / "more")  # a link to a folder of texts is data
    assert corpora.read_class_folders(str(root))[2] == ["neg", "pos", "zz_linked"]
    (root / "mixed").mkdir()
    refused(lambda: corpora.read_class_folders(str(root)), "the class folder 'mixed'", "is empty")


# --- Hugging Face datasets ----------------------------------------------------------------


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """The datasets cache, moved to a folder of the test's own."""
    datasets = pytest.importorskip("datasets")
    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    return cache


def _hf(**options):
    return rj.data.get_task("hf").build(corpora.HFOptions(tokens="words", **options))


def test_a_local_csv_is_loaded_quietly_and_left_out_of_the_cache(hf_cache, tmp_path, capfd):
    path = tmp_path / "reviews.csv"
    path.write_text(
        "text,label\n"
        + "\n".join(f"review {i} {'good' if i % 2 else 'bad'},{i % 2}" for i in range(20))
    )
    refused(
        lambda: _hf(dataset=str(path)), "the splits ['test'] are not in", 'set data.eval_split=""'
    )
    spec = _hf(dataset=str(path), eval_split="", valid_fraction=0.25)
    assert spec.output_size == 2 and spec.info["eval_rows"] == 5
    assert "Generating" not in capfd.readouterr().err
    assert not hf_cache.exists() or not any(hf_cache.rglob("*"))


def _rows(*rows):
    return "".join(json.dumps(dict(zip(("text", "label"), r, strict=True))) + "\n" for r in rows)


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("null.jsonl", _rows(("a", 0), (None, 1)) * 3, "got NoneType in rows [1, 3, 5]"),
        ("list.jsonl", _rows((["a"], 0), ("b", 1)) * 3, "got list in rows [0, 2, 4]"),
        ("huge.jsonl", _rows(("a", 0), ("b", 2**40)) * 3, "got 1099511627776 in rows [1, 3, 5]"),
        ("broken.jsonl", _rows(("a", 0)) + '{"text": "b", "lab\n', "could not be loaded"),
        ("broken.csv", 'text,label\n"a,0\nb,1,2\n', "could not be loaded"),
    ],
)
def test_malformed_hf_files_are_one_line_errors(name, content, fragment, hf_cache, tmp_path):
    """Texts that are not strings, labels past int32 (which wrapped to one
    class with accuracy 1.0) and files that do not parse."""
    path = tmp_path / name
    path.write_text(content)
    refused(lambda: _hf(dataset=str(path), eval_split=""), name, fragment)


HUB_SCRIPT = """
import time
from recurrent_jax.data import hub
from recurrent_jax.data.base import DataError
start = time.monotonic()
try:
    hub.load_splits("recurrent-jax-tests/no-such-dataset", "", ("train",))
except DataError as error:
    print(f"{time.monotonic() - start:.2f}")
    print(error)
"""


@pytest.mark.slow  # a subprocess that imports JAX and datasets
@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable hub"])
def test_the_hub_out_of_reach_fails_at_once(offline, tmp_path):
    pytest.importorskip("datasets")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    env.update(
        {"HF_HUB_OFFLINE": "1"}
        if offline == "HF_HUB_OFFLINE"
        else {"HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    )
    out = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    seconds, message = out.stdout.splitlines()
    assert float(seconds) < 5.0, (seconds, out.stderr[-2000:])  # retries would take 23 s
    assert "'recurrent-jax-tests/no-such-dataset'" in message
    assert "give a save_to_disk folder or local parquet, csv or json files" in message
    assert (
        "HF_HUB_OFFLINE is set" if offline == "HF_HUB_OFFLINE" else "cannot be reached"
    ) in message


# --- configs: task options, overrides, a task switch ----------------------------------------


def _task_with(options_cls):
    return rj.data.Task("mine", "a task", "many-to-one", options_cls, lambda options: None)


def test_task_options_must_be_frozen_dataclasses_apart_from_the_common_keys():
    import dataclasses

    from recurrent_jax.train.config import ConfigError, base_config

    @dataclasses.dataclass(frozen=True)
    class Clashing:
        batch_size: int = 3

    @dataclasses.dataclass
    class Mutable:
        size: int = 3

    for cls, fragment in [
        (Clashing, "leave the common config.data keys alone, got the field(s) ['batch_size']"),
        (Mutable, "to be a frozen dataclass (@dataclasses.dataclass(frozen=True)), got"),
    ]:
        rj.data.register_task(_task_with(cls))
        with pytest.raises(
            ConfigError, match=r"config\.data\.task: expected the options of 'mine'"
        ) as info:
            base_config("mine")
        assert fragment in str(info.value) and "\n" not in str(info.value)


def test_overrides_of_tuples_and_optional_keys(tmp_path, capsys):
    from recurrent_jax.train import config_files
    from recurrent_jax.train.config import from_config_dict

    (tmp_path / "mine.py").write_text(ARRAYS_CONFIG)
    raw = config_files.load_config(str(tmp_path / "mine.py"))
    overrides = [
        ("data.feature_columns", "[f0,f1]"),
        ("data.vocab_size", "12"),
        ("model.embedding_size", "4"),
    ]
    config_files.apply_overrides(raw, overrides)
    config_files.apply_overrides(
        raw, [("model.embedding_size", "None"), ("data.vocab_size", "None")]
    )
    config = from_config_dict(raw)
    assert config.data.options.feature_columns == ("f0", "f1")
    assert config.data.options.vocab_size is None and config.model.embedding_size is None
    config_files.apply_overrides(raw, [("data.feature_columns", "('a', 'b c')")])
    assert raw.data.feature_columns == ("a", "b c")
    for override, fragment in [
        (
            "--config.model.hidden_size=None",
            "config.model.hidden_size: expected int, got NoneType None",
        ),
        (
            "--config.training.num_steps=[1,2]",
            "config.training.num_steps: expected int, got '[1,2]'",
        ),
        (
            "--config.data.feature_columns=[1,2]",
            "config.data.feature_columns: expected a tuple of column names",
        ),
    ]:
        assert fragment in cli_error(tmp_path, capsys, "--config.data.path=x.npz", override)


def test_a_task_switch_on_the_command_line_brings_its_keys(tmp_path, rng):
    """The seed config's docstring route: its topics task swapped for your
    own arrays from the command line."""
    from recurrent_jax.train import config_files, core
    from recurrent_jax.train.config import from_config_dict

    ids = rng.integers(0, 30, (40, 9))
    path = arrays_task.save_arrays(tmp_path / "mine.npz", ids, np.arange(40) % 4)
    raw = config_files.load_config("seed_text_classifier:smoke")
    overrides = [("data.path", str(path)), ("data.task", "arrays"), ("data.batch_size", "8")]
    config = from_config_dict(config_files.apply_overrides(raw, overrides))
    assert config.data.task == "arrays" and config.data.batch_size == 8
    assert config.data.options == arrays_task.ArraysOptions(path=str(path))  # the rest at defaults
    task = core.build_task(config)
    assert (task.input_vocab, task.output_size) == (30, 4)
