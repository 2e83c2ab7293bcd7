"""``topics``: classify token sequences by topic, generated on device.

Each of ``num_classes`` topics owns ``keywords`` token ids of a vocabulary
of ``vocab_size`` (fixed, disjoint); a sequence of a topic draws each token
from its keywords with probability ``keyword_prob``, else uniformly from
the whole vocabulary, and has a length uniform in [seq_len / 2, seq_len]
(padding is token 0, masked). Counting keywords solves it; a guess scores
1 / num_classes. The shape of a text classifier's data (integer token
sequences, ``configs/seed_text_classifier.py``), with nothing to download.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.data.base import CLASSIFICATION, LAST, Batch, Task, TaskSpec
from recurrent_jax.sequence import length_mask


@dataclasses.dataclass(frozen=True)
class TopicsOptions:
    vocab_size: int = 1000
    num_classes: int = 10
    keywords: int = 20
    keyword_prob: float = 0.2
    seq_len: int = 80

    def __post_init__(self):
        _checks.check_at_least("num_classes", self.num_classes, 2)
        _checks.check_positive("keywords", self.keywords)
        _checks.check_at_least("seq_len", self.seq_len, 2)
        need = self.num_classes * self.keywords + 1
        if self.vocab_size < need:
            _checks.fail(
                "vocab_size", f"at least num_classes * keywords + 1 = {need}", self.vocab_size
            )
        if not 0.0 < self.keyword_prob <= 1.0:
            _checks.fail("keyword_prob", "a probability in (0, 1]", self.keyword_prob)


def topics_batch(key: jax.Array, batch_size: int, o: TopicsOptions) -> Batch:
    """xs int32 (B, T) token ids, targets (B,) topics, seq_lengths (B,)."""
    k_class, k_len, k_pick, k_word, k_noise = jax.random.split(key, 5)
    labels = jax.random.randint(k_class, (batch_size,), 0, o.num_classes)
    lengths = jax.random.randint(k_len, (batch_size,), o.seq_len // 2, o.seq_len + 1)
    shape = (batch_size, o.seq_len)
    keyword = 1 + labels[:, None] * o.keywords + jax.random.randint(k_word, shape, 0, o.keywords)
    noise = jax.random.randint(k_noise, shape, 1, o.vocab_size)
    ids = jnp.where(jax.random.bernoulli(k_pick, o.keyword_prob, shape), keyword, noise)
    ids = jnp.where(length_mask(lengths, o.seq_len), ids, 0)
    return Batch(ids.astype(jnp.int32), labels, seq_lengths=lengths.astype(jnp.int32))


def build_topics(options: TopicsOptions) -> TaskSpec:
    sample = lambda key, n: topics_batch(key, n, options)  # noqa: E731
    return TaskSpec(
        input_size=options.vocab_size,
        output_size=options.num_classes,
        kind=CLASSIFICATION,
        output_mode=LAST,
        causal=False,
        sample_train=sample,
        eval_set=sample,
        baselines={"accuracy (guess)": 1.0 / options.num_classes},
        primary_metric="accuracy",
        higher_is_better=True,
        input_vocab=options.vocab_size,
    )


TASKS = [
    Task(
        "topics",
        "topic of a token sequence (keywords among noise): text classification's shape",
        "many-to-one classification of token ids",
        TopicsOptions,
        build_topics,
    )
]
