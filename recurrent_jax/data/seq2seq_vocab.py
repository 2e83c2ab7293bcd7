"""A seq2seq task's vocabularies: ``TaskSpec.vocab`` of a task whose
``kind`` is "seq2seq", read by the model (its embedding and softmax
sizes), the decoders (BOS, EOS, PAD) and everything that turns ids into
text (samples, ``decode``, ``predict``).

Ids: ``pad_id`` 0, ``bos_id`` 1, ``eos_id`` 2, then the symbols, the
i-th at id ``FIRST + i``, on each side. Symbols are characters joined by
"" (the built-in character tasks, text pairs) or tokens joined by a
``separator`` (" " for the integer ids of an ``.npz`` of pairs).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from recurrent_jax.data.base import DataError

FIRST = 3  # the id of each side's first symbol: 0, 1, 2 are PAD, BOS, EOS
SIDES = ("source", "target")


class Seq2SeqVocab(NamedTuple):
    """The source and target symbols of a seq2seq task (module docstring).

    Attributes:
      source: the source symbols, in id order from ``FIRST``.
      target: the target symbols, likewise.
      separator: what joins decoded symbols ("" for characters).
      pad_id, bos_id, eos_id: the special ids, shared by both sides.
    """

    source: tuple
    target: tuple
    separator: str = ""
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    @property
    def source_size(self) -> int:
        """The source side's ids: the specials and its symbols."""
        return FIRST + len(self.source)

    @property
    def target_size(self) -> int:
        """The target side's ids: the specials and its symbols."""
        return FIRST + len(self.target)

    def symbols(self, text: str) -> list[str]:
        """The symbols of ``text``: its characters, or its separated tokens."""
        if not self.separator:
            return list(text)
        return text.split() if self.separator.isspace() else text.split(self.separator)

    def encode(self, texts, side: str = "source", width: int | None = None):
        """Strings to ``(ids int32 (N, width), lengths (N,))``, padded with
        ``pad_id``; a symbol outside ``side``'s vocabulary, or a text longer
        than ``width``, is a one-line ``DataError``."""
        index = {s: FIRST + i for i, s in enumerate(getattr(self, side))}
        rows = []
        for n, text in enumerate(texts):
            symbols = self.symbols(text) if text else []
            unknown = sorted({s for s in symbols if s not in index})
            if unknown:
                raise DataError(
                    f"{side} {n}: symbols {unknown[:5]} are not in the task's {side} "
                    f"vocabulary of {len(index)}"
                )
            rows.append([index[s] for s in symbols])
        lengths = np.array([len(r) for r in rows], np.int32)
        width = int(lengths.max(initial=1)) if width is None else width
        if lengths.size and lengths.max() > width:
            row = int(lengths.argmax())
            raise DataError(f"{side} {row}: expected at most {width} symbols, got {lengths[row]}")
        ids = np.full((len(rows), width), self.pad_id, np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return ids, lengths

    def decode(self, ids, lengths=None, side: str = "target") -> list[str]:
        """Ids (N, L) back to strings; a row stops at its length, at EOS or
        at PAD (whichever first); BOS is skipped."""
        symbols, ids = getattr(self, side), np.asarray(ids)
        out = []
        for i, row in enumerate(ids):
            row = row if lengths is None else row[: int(np.asarray(lengths)[i])]
            kept = []
            for t in row.tolist():
                if t in (self.eos_id, self.pad_id):
                    break
                if t >= FIRST and t - FIRST < len(symbols):
                    kept.append(symbols[t - FIRST])
            out.append(self.separator.join(kept))
        return out

    def token(self, i: int, side: str) -> str:
        """A tick label: ``<pad>``, ``<s>``, ``</s>`` or the symbol."""
        names = {self.pad_id: "<pad>", self.bos_id: "<s>", self.eos_id: "</s>"}
        symbols = getattr(self, side)
        return names.get(i) or (symbols[i - FIRST] if FIRST <= i < self.size(side) else "?")

    def size(self, side: str) -> int:
        """``source_size`` or ``target_size``."""
        return self.source_size if side == "source" else self.target_size
