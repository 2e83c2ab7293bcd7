"""Loading Hugging Face ``datasets`` datasets: a hub name, a
``save_to_disk`` folder, a folder of data files or one data file.

- Local data files (parquet, csv, json, jsonl, txt) are read through a
  temporary cache that is removed once they are in memory: nothing is
  copied into the datasets cache, and a load that fails leaves nothing
  behind. A ``save_to_disk`` folder is memory-mapped where it is.
- A hub name is looked up only when the hub answers: with
  ``HF_HUB_OFFLINE`` set, or a hub that cannot be reached, the load fails
  at once (no retries) naming the offline alternatives.
- Only data is read: ``datasets`` runs no loading scripts (it has dropped
  them), and ``save_to_disk`` folders hold Arrow tables and JSON.
- Progress bars of building a split are not shown.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from recurrent_jax.data import readers
from recurrent_jax.data.base import DataError, MissingExtraError

DATA_FILES = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}
OFFLINE = "offline, give a save_to_disk folder or local parquet, csv or json files as data.dataset"


@functools.cache
def load_splits(dataset: str, subset: str, names: tuple) -> tuple:
    """The named splits of ``dataset`` (None for an empty name)."""
    datasets = _datasets()
    local = Path(dataset)
    with _quiet(datasets):
        if (local / "dataset_dict.json").exists() or (local / "dataset_info.json").exists():
            loaded = _load(dataset, lambda: datasets.load_from_disk(str(local)))
        elif readers.exists(local):
            loaded = _load_files(datasets, dataset, local)
        elif local.suffix in (*DATA_FILES, ".txt") or dataset.startswith(("/", ".", "~")):
            raise DataError(f"config.data.dataset: no such local file or folder {dataset!r}")
        else:
            loaded = _load_from_hub(datasets, dataset, subset)
    available = list(loaded) if hasattr(loaded, "keys") else []
    missing = [n for n in names if n and n not in available]
    if missing:
        hint = (
            '; set data.eval_split="" to hold out data.valid_fraction of the training rows'
            if available == ["train"]
            else ""
        )
        raise DataError(
            f"config.data: the splits {missing} are not in {dataset!r}: {available}{hint}"
        )
    return tuple(loaded[n] if n else None for n in names)


def _datasets():
    try:
        import datasets
    except ImportError:
        raise MissingExtraError(
            "data.task='hf' needs the datasets package: pip install 'recurrent-jax[data]'"
        ) from None
    return datasets


def _load(dataset: str, load):
    try:
        return load()
    except Exception as error:  # datasets' and pyarrow's errors are many, none ours
        if isinstance(error, DataError):
            raise
        raise DataError(
            f"config.data.dataset: {dataset!r} could not be loaded ({readers.one_line(error)})"
        ) from None


def _load_files(datasets, dataset: str, local: Path):
    """Local data files, through a temporary cache (nothing kept in the
    datasets cache)."""
    if local.is_file():
        readers.open_regular(local, "config.data.dataset").close()
        kind, files = DATA_FILES.get(local.suffix, "text"), str(local)
    else:
        kind, files = str(local), None
    with tempfile.TemporaryDirectory(prefix="recurrent_jax_hf_") as cache:
        return _load(
            dataset,
            lambda: datasets.load_dataset(
                kind, data_files=files, cache_dir=cache, keep_in_memory=True
            ),
        )


def _load_from_hub(datasets, dataset: str, subset: str):
    """A hub dataset; offline or with the hub out of reach, no retries."""
    offline = datasets.config.HF_HUB_OFFLINE
    why = "HF_HUB_OFFLINE is set" if offline else _unreachable()
    if why and not offline:
        raise DataError(
            f"config.data.dataset: {dataset!r} is not a local folder or file and {why}; "
            f"{OFFLINE}, or set HF_HUB_OFFLINE=1 to use a copy in the datasets cache"
        )
    try:
        return datasets.load_dataset(dataset, subset or None)
    except Exception as error:  # the hub's errors are many
        where = f" and {why}" if offline else ""
        raise DataError(
            f"config.data.dataset: {dataset!r} could not be loaded{where} "
            f"({readers.one_line(error)}){'; ' + OFFLINE if offline else ''}"
        ) from None


def _unreachable() -> str:
    """Why the hub cannot be reached now, or "" when it answers."""
    from huggingface_hub import constants

    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=5).close()
    except urllib.error.HTTPError:
        return ""  # it answered
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"the Hugging Face hub {constants.ENDPOINT} cannot be reached ({reason})"
    return ""


@contextlib.contextmanager
def _quiet(datasets):
    """No progress bars while a split is built."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
