"""Packed sequences against the padded batch and one sequence at a time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj
from recurrent_jax import packing

D, H = 3, 5
LENGTHS = [4, 0, 1, 7, 3, 2, 1, 6]  # 0 and 1 included


def sequences(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, D)).astype(np.float32) for n in lengths]


def padded(seqs):
    steps = max(len(s) for s in seqs)
    xs = np.zeros((len(seqs), steps, D), np.float32)
    for n, s in enumerate(seqs):
        xs[n, : len(s)] = s
    return jnp.asarray(xs), jnp.asarray([len(s) for s in seqs])


def close(a, b, tol=2e-5):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


# --- layout --------------------------------------------------------------------


@pytest.mark.parametrize("row_length", [None, 7, 10, 40])
def test_layout_puts_every_sequence_in_one_row_without_overlap(row_length):
    """Brute force over the slots: each sequence's steps, in order, and nothing else."""
    seqs = sequences()
    p = rj.pack(seqs, row_length=row_length)
    assert p.data.shape[1] == (row_length or max(LENGTHS))
    seen = np.zeros(p.segment_ids.shape, int)
    for n, s in enumerate(seqs):
        r, st = int(p.rows[n]), int(p.starts[n])
        np.testing.assert_array_equal(p.data[r, st : st + len(s)], s)
        np.testing.assert_array_equal(p.segment_ids[r, st : st + len(s)], n)
        np.testing.assert_array_equal(p.positions[r, st : st + len(s)], np.arange(len(s)))
        seen[r, st : st + len(s)] += 1
    assert seen.max() <= 1
    assert (np.asarray(p.segment_ids) >= 0).sum() == sum(LENGTHS)
    np.testing.assert_array_equal(np.asarray(p.data)[np.asarray(p.segment_ids) < 0], 0.0)


def test_pack_of_a_padded_batch_equals_pack_of_the_list_and_unpack_inverts_it():
    seqs = sequences()
    xs, lengths = padded(seqs)
    a, b = rj.pack(seqs), rj.pack(xs, lengths)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(rj.unpack(a, xs.shape[1]), xs)


def test_first_fit_decreasing_fills_rows():
    """Lengths 6, 4, 3, 2, 1 into rows of 8: [6, 2], [4, 3, 1]."""
    rows, starts, num_rows, _ = packing.layout([1, 2, 3, 4, 6], 8)
    assert num_rows == 2
    assert rows.tolist() == [1, 0, 1, 1, 0] and starts.tolist() == [7, 6, 4, 0, 0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: rj.pack(s, row_length=3), r"row_length: expected at least the longest"),
        (lambda s: rj.pack(s, [1, 2]), r"seq_lengths: a list of sequences has its own"),
        (
            lambda s: rj.pack(np.zeros((2, 4, D)), [1, 5]),
            r"seq_lengths: expected values in \[0, 4\]",
        ),
        (lambda s: rj.pack(np.zeros((4, D))), r"sequences: expected \(N, T, F\)"),
        (lambda s: rj.pack([np.zeros((2, 3)), np.zeros((2, 4))]), r"same number of features"),
        (lambda s: packing.layout([2, -1]), r"seq_lengths: expected lengths >= 0"),
    ],
)
def test_pack_errors_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call(sequences())


# --- the engine on packed input ---------------------------------------------------


@pytest.mark.parametrize("name", list(rj.cells.REGISTRY))
@pytest.mark.parametrize("reverse", [False, True])
def test_packed_equals_one_sequence_at_a_time(name, reverse):
    """Outputs and per-sequence final carries of every cell, both directions."""
    cell = rj.cells.REGISTRY[name](H)
    params = cell.init(jax.random.key(1), D)
    seqs = sequences()
    p = rj.pack(seqs, row_length=9)
    final, ys = jax.jit(lambda p_, x: rj.unroll(cell, p_, x, reverse=reverse))(params, p)
    out = rj.unpack(ys, max(LENGTHS))
    zero = cell.initial_carry((), jnp.float32)
    for n, s in enumerate(seqs):
        if len(s) == 0:
            close(jax.tree_util.tree_map(lambda c, n=n: c[n], final), zero)
            np.testing.assert_array_equal(out[n], 0.0)
            continue
        want_c, want_y = rj.unroll(cell, params, jnp.asarray(s)[None], reverse=reverse)
        close(out[n, : len(s)], want_y[0])
        close(
            jax.tree_util.tree_map(lambda c, n=n: c[n], final),
            jax.tree_util.tree_map(lambda c: c[0], want_c),
        )


def test_packed_equals_padded_with_gradients():
    """Loss over the valid steps and its gradient: packed == padded (seq_lengths)."""
    cell = rj.cells.lstm(H)
    params = cell.init(jax.random.key(2), D)
    seqs = sequences()
    xs, lengths = padded(seqs)
    p = rj.pack(seqs, row_length=12)
    weights = jax.random.normal(jax.random.key(3), (len(seqs), xs.shape[1], H))

    def loss_packed(params):
        final, ys = rj.unroll(cell, params, p)
        return jnp.sum(rj.unpack(ys, xs.shape[1]) * weights) + jnp.sum(final.c**2)

    def loss_padded(params):
        final, ys = rj.unroll(cell, params, xs, seq_lengths=lengths)
        return jnp.sum(ys * weights) + jnp.sum(final.c**2)

    close(jax.value_and_grad(loss_packed)(params), jax.value_and_grad(loss_padded)(params), 5e-5)


def test_stacked_bidirectional_layers_run_within_each_sequence():
    """A 2-layer bidirectional GRU stack (with a residual) on packed input ==
    the padded batch, outputs and each layer's final carries; the backward
    direction never reads a neighbour in the row."""
    net = rj.stack(
        [rj.bidirectional(rj.cells.gru(H)), rj.bidirectional(rj.cells.gru(H))], residual=True
    )
    params = net.init(jax.random.key(4), D)
    seqs = sequences(seed=5)
    xs, lengths = padded(seqs)
    p = rj.pack(seqs, row_length=16)
    carries, ys = net.apply(params, p)
    want_carries, want = net.apply(params, xs, seq_lengths=lengths)
    close(rj.unpack(ys, xs.shape[1]), want)
    close(carries, want_carries)
    # the output per sequence (return_sequences=False), both directions merged
    plain = rj.stack([rj.bidirectional(rj.cells.gru(H)), rj.bidirectional(rj.cells.gru(H))])
    _, last = plain.apply(params, p, return_sequences=False)
    _, want_last = plain.apply(params, xs, seq_lengths=lengths, return_sequences=False)
    assert last.shape == (len(seqs), 2 * H)
    close(last, want_last)


def test_packed_learned_initial_carry_and_front_doors():
    seqs = sequences(seed=6)
    xs, lengths = padded(seqs)
    p = rj.pack(seqs)
    lay = rj.layer(rj.cells.gru(H), learn_initial_carry=True)
    params = lay.init(jax.random.key(7), D)
    params["initial_carry"] = jnp.linspace(-1, 1, H)
    close(
        rj.unpack(lay.apply(params, p)[1], xs.shape[1]),
        lay.apply(params, xs, seq_lengths=lengths)[1],
    )
    module = rj.nn.GRU(H, num_layers=2)
    variables = module.init(jax.random.key(8), xs)
    close(
        rj.unpack(module.apply(variables, p), xs.shape[1]),
        module.apply(variables, xs, seq_lengths=lengths),
    )
    from flax import nnx

    door = rj.nnx.LSTM(D, H, bidirectional=True, rngs=nnx.Rngs(0))
    close(rj.unpack(door(p), xs.shape[1]), door(xs, seq_lengths=lengths))
    pytest.importorskip("equinox")
    door = rj.eqx.GRU(D, H, num_layers=2, key=jax.random.key(9))
    close(rj.unpack(door(p), xs.shape[1]), door(xs, seq_lengths=lengths))


def test_input_dropout_draws_one_mask_per_packed_sequence():
    """With a Packed input each sequence gets its own mask: sequences that
    share a row differ as their padded rows would (not one shared mask)."""
    seq = sequences([4])[0]
    p = rj.pack([seq, seq], row_length=8)  # both in row 0
    assert p.rows.tolist() == [0, 0]
    cell = rj.cells.elman(H)
    params = cell.init(jax.random.key(9), D)
    _, ys = rj.unroll(cell, params, p, dropout=0.5, key=jax.random.key(10))
    out = rj.unpack(ys)
    assert not np.allclose(out[0], out[1])
    _, ys = rj.unroll(cell, params, p, dropout=0.5, key=jax.random.key(10), deterministic=True)
    np.testing.assert_array_equal(rj.unpack(ys)[0], rj.unpack(ys)[1])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"seq_lengths": jnp.ones(2, int)}, r"seq_lengths: a Packed input holds its own"),
        ({"time_major": True}, r"time_major: a Packed input"),
        (
            {"recurrent_dropout": 0.1, "key": jax.random.key(0)},
            r"recurrent_dropout: its one mask per sequence",
        ),
        ({"initial_carry": jnp.zeros((2, H))}, r"initial_carry \(one sequence's"),
    ],
)
def test_options_that_cannot_apply_to_packed_input_are_errors(options, message):
    cell = rj.cells.elman(H)
    params = cell.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=message):
        rj.unroll(cell, params, rj.pack(sequences()), **options)


# --- bucketing ------------------------------------------------------------------


def test_bucketing_groups_similar_lengths_and_covers_every_index():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, 103)
    batches = rj.bucket_by_length(lengths, 16, seed=1)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(103))
    assert sorted(len(b) for b in batches) == [7] + [16] * 6
    spans = sorted((lengths[b].min(), lengths[b].max()) for b in batches)
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:], strict=False))  # disjoint
    brute = 1 - lengths.sum() / sum(len(b) * lengths[b].max() for b in batches)
    assert packing.padding_fraction(lengths, batches) == pytest.approx(brute)
    assert packing.padding_fraction(lengths, batches) < packing.padding_fraction(lengths)
    unshuffled = rj.bucket_by_length(lengths, 16)
    assert [lengths[b].max() for b in unshuffled] == sorted(lengths[b].max() for b in unshuffled)
    with pytest.raises(ValueError, match="batch_size: expected a positive int"):
        rj.bucket_by_length(lengths, 0)


def test_row_multiple_adds_empty_rows():
    p = rj.pack(sequences(), row_length=8, row_multiple=4)
    assert p.segment_ids.shape[0] % 4 == 0
    assert (np.asarray(p.segment_ids)[-1] == -1).all()
    np.testing.assert_array_equal(rj.unpack(p, 7), rj.unpack(rj.pack(sequences(), row_length=8), 7))
    with pytest.raises(ValueError, match="row_multiple: expected a positive int"):
        rj.pack(sequences(), row_multiple=0)


def test_unpack_refuses_a_max_length_that_would_cut_sequences():
    with pytest.raises(
        ValueError, match=r"max_length: expected an int >= the longest sequence \(7\)"
    ):
        rj.unpack(rj.pack(sequences()), 5)
