"""Packed sequences: many variable-length sequences back to back in a few
rows, so a batch of lengths 1..10,000 costs its total length, not
(count × longest).

``pack`` lays sequences into rows of ``row_length`` slots (first fit, longest
first) and returns a ``Packed`` value; ``rj.unroll``, ``layer``, ``stack``
and ``bidirectional`` accept it in place of ``xs`` and return outputs as a
``Packed`` (the same layout) and final carries per sequence. ``unpack``
gives the per-sequence outputs back, padded. Inside a row each sequence
starts from the initial carry (the engine's ``resets``), and the backward
direction of a bidirectional layer runs within each sequence (each segment
reversed in place), never across its neighbours.

``bucket_by_length`` groups sequences of similar lengths into padded
batches, the other way to waste little on padding.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks


class Packed(NamedTuple):
    """Sequences packed in rows (a pytree; every field an array).

    Attributes:
      data: (R, L, F) the steps of the packed sequences (inputs or outputs);
        zeros on the slots no sequence uses.
      segment_ids: (R, L) int32, the sequence each slot holds, -1 on unused
        slots.
      positions: (R, L) int32, the step of its sequence a slot holds (0 at
        a sequence's first step and on unused slots).
      rows: (N,) int32, the row of each sequence.
      starts: (N,) int32, the slot of each sequence's first step.
      lengths: (N,) int32, each sequence's length (0 allowed).
    """

    data: jax.Array
    segment_ids: jax.Array
    positions: jax.Array
    rows: jax.Array
    starts: jax.Array
    lengths: jax.Array

    @property
    def valid(self) -> jax.Array:
        """(R, L) bool: slots holding a step of a sequence."""
        return self.segment_ids >= 0

    @property
    def resets(self) -> jax.Array:
        """(R, L) bool: the first step of each sequence."""
        return self.valid & (self.positions == 0)

    def replace_data(self, data) -> Packed:
        return self._replace(data=data)


# --- layout (host side) ----------------------------------------------------------


def layout(lengths, row_length: int | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(rows, starts, num_rows, row_length)`` of a first-fit-decreasing
    packing of ``lengths`` into rows of ``row_length`` slots (default: the
    longest length). Sequences of length 0 take no slot (row 0, start 0)."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"seq_lengths: expected a 1-d int array, got {lengths!r}")
    if (lengths < 0).any():
        raise ValueError(f"seq_lengths: expected lengths >= 0, got {lengths.min()}")
    longest = int(lengths.max(initial=0))
    row_length = max(longest, 1) if row_length is None else row_length
    if isinstance(row_length, bool) or not isinstance(row_length, int) or row_length < 1:
        raise ValueError(f"row_length: expected a positive int, got {row_length!r}")
    if longest > row_length:
        raise ValueError(
            f"row_length: expected at least the longest sequence ({longest} steps), "
            f"got {row_length}"
        )
    rows = np.zeros(len(lengths), np.int32)
    starts = np.zeros(len(lengths), np.int32)
    used: list[int] = []  # slots used per row
    for n in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = int(lengths[n])
        if length == 0:
            continue
        row = next((r for r, u in enumerate(used) if u + length <= row_length), len(used))
        if row == len(used):
            used.append(0)
        rows[n], starts[n] = row, used[row]
        used[row] += length
    return rows, starts, max(len(used), 1), row_length


def pack(
    sequences, seq_lengths=None, *, row_length: int | None = None, row_multiple: int = 1
) -> Packed:
    """Packs sequences back to back into rows.

    Args:
      sequences: a list of (T_n, F) arrays, or a padded (N, T, F) array
        with ``seq_lengths``.
      seq_lengths: (N,) ints in [0, T] for a padded array (None: all T).
      row_length: slots per row (default: the longest sequence).
      row_multiple: the number of rows is rounded up to a multiple of it
        (empty rows added), so batches of varying lengths take few shapes
        and ``jit`` compiles few times.

    Returns:
      A ``Packed`` with ``data`` (R, row_length, F). The layout depends on
      the lengths only, so it is computed on the host: call ``pack`` in the
      data pipeline, outside ``jit``.
    """
    if isinstance(sequences, list | tuple):
        if seq_lengths is not None:
            raise ValueError("seq_lengths: a list of sequences has its own lengths; got both")
        arrays = [np.asarray(s) for s in sequences]
        if not arrays or any(a.ndim != 2 for a in arrays):
            raise ValueError("sequences: expected a non-empty list of (T_n, F) arrays")
        lengths = np.asarray([a.shape[0] for a in arrays], np.int32)
        features, dtype = arrays[0].shape[1], np.result_type(*arrays)
        if any(a.shape[1] != features for a in arrays):
            raise ValueError("sequences: expected the same number of features in every one")
    else:
        padded = np.asarray(sequences)
        if padded.ndim != 3:
            raise ValueError(f"sequences: expected (N, T, F) or a list, got shape {padded.shape}")
        num, steps, features = padded.shape
        lengths = np.full(num, steps, np.int32) if seq_lengths is None else np.asarray(seq_lengths)
        lengths = _checks.check_seq_lengths(lengths, (num,), steps, of="sequences")
        lengths = np.asarray(lengths)
        arrays, dtype = [padded[n, : lengths[n]] for n in range(num)], padded.dtype
    rows, starts, num_rows, row_length = layout(lengths, row_length)
    if isinstance(row_multiple, bool) or not isinstance(row_multiple, int) or row_multiple < 1:
        raise ValueError(f"row_multiple: expected a positive int, got {row_multiple!r}")
    num_rows = -(-num_rows // row_multiple) * row_multiple
    data = np.zeros((num_rows, row_length, features), dtype)
    segment_ids = np.full((num_rows, row_length), -1, np.int32)
    positions = np.zeros((num_rows, row_length), np.int32)
    for n, (a, r, s) in enumerate(zip(arrays, rows, starts, strict=True)):
        data[r, s : s + len(a)] = a
        segment_ids[r, s : s + len(a)] = n
        positions[r, s : s + len(a)] = np.arange(len(a))
    return Packed(*map(jnp.asarray, (data, segment_ids, positions, rows, starts, lengths)))


# --- on device -------------------------------------------------------------------


def unpack(packed: Packed, max_length: int | None = None) -> jax.Array:
    """(N, T, F) per-sequence data, zeros past each length; T is
    ``max_length`` (default: the packed row length)."""
    if not isinstance(packed, Packed):
        _checks.fail_type("packed", "an rj.Packed (from rj.pack)", packed)
    num_steps = packed.data.shape[-2] if max_length is None else max_length
    if _checks.is_concrete(packed.lengths) and packed.lengths.size:
        longest = int(packed.lengths.max())
        if not isinstance(num_steps, int) or num_steps < longest:
            raise ValueError(
                f"max_length: expected an int >= the longest sequence ({longest}), "
                f"got {num_steps!r}"
            )
    steps = jnp.arange(num_steps)
    slots = jnp.clip(packed.starts[:, None] + steps[None], 0, packed.data.shape[-2] - 1)
    values = packed.data[packed.rows[:, None], slots]
    valid = steps[None] < packed.lengths[:, None]
    return jnp.where(valid[..., None], values, jnp.zeros((), values.dtype))


def reversal_index(packed: Packed) -> jax.Array:
    """(R, L) slot index that reverses every sequence in place (unused slots
    stay): an involution, so the same gather undoes it."""
    slots = jnp.arange(packed.segment_ids.shape[-1])[None]
    ids = jnp.maximum(packed.segment_ids, 0)
    first = packed.starts[ids]
    last = first + packed.lengths[ids] - 1
    return jnp.where(packed.valid, first + last - slots, slots)


def take_slots(a, index):
    """``a`` (R, L, ...) gathered along the slot axis by ``index`` (R, L)."""
    index = index.reshape(*index.shape, *(1,) * (a.ndim - 2))
    return jnp.take_along_axis(a, jnp.broadcast_to(index, a.shape), axis=1)


def per_sequence_last(carries, packed: Packed, initial):
    """The carry after each sequence's last step: leaves (N, ·) from the
    per-slot ``carries`` (R, L, ·); ``initial`` (leaves (·)) for length 0."""
    last = jnp.maximum(packed.starts + packed.lengths - 1, 0)
    empty = packed.lengths == 0

    def pick(c, c0):
        picked = c[packed.rows, last]
        return jnp.where(empty.reshape(-1, *(1,) * (picked.ndim - 1)), c0[None], picked)

    return jax.tree_util.tree_map(pick, carries, initial)


def per_sequence_output(ys: Packed, reverse: bool) -> jax.Array:
    """(N, F): each sequence's output after it was read whole — at its last
    step forward, at its first in reverse; zeros for length 0."""
    offset = 0 if reverse else jnp.maximum(ys.lengths - 1, 0)
    picked = ys.data[ys.rows, ys.starts + offset]
    return jnp.where((ys.lengths > 0)[:, None], picked, jnp.zeros((), picked.dtype))


def sequence_rows(values, packed: Packed):
    """Per-sequence ``values`` (N, ...) spread to the slots (R, L, ...)
    (unused slots take sequence 0's)."""
    return values[jnp.maximum(packed.segment_ids, 0)]


def bucket_by_length(lengths, batch_size: int, *, seed: int | None = None) -> list[np.ndarray]:
    """Index batches of ``batch_size`` sequences of similar lengths (sorted
    by length, then cut), so each batch pads to a length close to its
    members'. ``seed`` (an int) shuffles the order of the batches with a
    NumPy generator seeded by it; None keeps them shortest first. The last
    batch may be smaller."""
    try:
        lengths = np.asarray(lengths)
    except ValueError:  # ragged: sequences rather than their lengths
        _checks.fail("lengths", "ints, one per sequence", type(lengths).__name__)
    if lengths.ndim != 1 or not (lengths.size == 0 or np.issubdtype(lengths.dtype, np.integer)):
        _checks.fail("lengths", "a 1-d array of ints, one per sequence", lengths)
    _checks.check_positive_int("batch_size", batch_size)
    if seed is not None and not _checks.is_int(seed):
        _checks.fail_type("seed", "None or an int", seed)
    order = np.argsort(lengths, kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if seed is not None:
        np.random.default_rng(seed).shuffle(batches)
    return batches


def padding_fraction(lengths, batches=None, *, packed: Packed | None = None) -> float:
    """The fraction of computed steps that are padding: of padded batches
    (``batches`` of indices, each padded to its longest; default one batch
    of all), or of a ``packed`` layout."""
    lengths = np.asarray(lengths)
    total = int(lengths.sum())
    if packed is not None:
        slots = int(np.prod(packed.segment_ids.shape))
    else:
        batches = [np.arange(len(lengths))] if batches is None else batches
        slots = sum(len(b) * int(lengths[b].max(initial=0)) for b in batches)
    return 1.0 - total / slots if slots else 0.0
