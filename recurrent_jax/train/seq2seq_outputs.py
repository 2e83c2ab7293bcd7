"""What a seq2seq run writes at each evaluation: decoded samples as text and
an attention-map PNG, from the greedy decode of the held-out batch.

``samples/step_NNNNNN.txt``: one line per example, ``source → prediction |
target`` and ✓ or ✗. ``plots/attention_step_NNNNNN.png``: the attention
weights of a few examples, output characters (rows) against source
characters (columns), cropped to their lengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recurrent_jax.train.plots import _pyplot, save_figure

SAMPLES_DIR = "samples"
PLOTS_DIR = "plots"


def format_samples(vocab, src, src_lengths, predictions, targets) -> list[str]:
    """``source → prediction | target ✓/✗`` lines (ids (N, ·) arrays of
    the task's ``vocab``)."""
    sources = vocab.decode(src, src_lengths, side="source")
    predicted = vocab.decode(predictions)
    wanted = vocab.decode(targets)
    return [
        f"{s} → {p} | {t} {'✓' if p == t else '✗'}"
        for s, p, t in zip(sources, predicted, wanted, strict=True)
    ]


def tokens(vocab, ids, length: int, side: str) -> list[str]:
    """Tick labels: the symbols of ``ids[:length]`` (EOS as ``</s>``)."""
    return [vocab.token(int(t), side) for t in np.asarray(ids)[:length]]


def plot_attention(examples, path: Path, title: str) -> Path | None:
    """One panel per example ``(weights (L, S), src_tokens, out_tokens)``:
    ``imshow`` of the weights cropped to (len(out_tokens), len(src_tokens))."""
    plt = _pyplot()
    if plt is None or not examples:
        return None
    size = (3.2 * len(examples) + 1, 3.4)
    fig, axes = plt.subplots(1, len(examples), figsize=size, squeeze=False, layout="constrained")
    for ax, (weights, src_tokens, out_tokens) in zip(axes[0], examples, strict=True):
        crop = np.asarray(weights)[: len(out_tokens), : len(src_tokens)]
        image = ax.imshow(crop, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src_tokens)), src_tokens)
        ax.set_yticks(range(len(out_tokens)), out_tokens)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        shown = out_tokens[:-1] if out_tokens[-1:] == ["</s>"] else out_tokens
        ax.set_title(f"{''.join(src_tokens)} → {''.join(shown)}", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), label="attention weight")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(plt, fig, path, tight=False)


def write_eval_outputs(
    vocab, workdir: Path, step: int, batch, decoded, *, num_samples: int = 32, num_maps: int = 3
) -> list[Path]:
    """Writes the samples file and the attention PNG of one evaluation;
    ``batch`` a host ``Seq2SeqBatch``, ``decoded`` the greedy ``Decoded``."""
    n = min(num_samples, batch.src.shape[0])
    sequences = np.asarray(decoded.sequences)
    lines = format_samples(
        vocab, batch.src[:n], batch.src_lengths[:n], sequences[:n], batch.tgt_out[:n]
    )
    text = workdir / SAMPLES_DIR / f"step_{step:06d}.txt"
    text.parent.mkdir(parents=True, exist_ok=True)
    text.write_text("\n".join(lines) + "\n")
    written = [text]
    if decoded.aux is not None:
        examples = [
            (
                np.asarray(decoded.aux)[i],
                tokens(vocab, batch.src[i], int(batch.src_lengths[i]), "source"),
                tokens(vocab, sequences[i], int(np.asarray(decoded.lengths)[i]), "target"),
            )
            for i in range(min(num_maps, n))
        ]
        png = workdir / PLOTS_DIR / f"attention_step_{step:06d}.png"
        if plot_attention(examples, png, f"attention at step {step}") is not None:
            written.append(png)
    return written


def write_final(workdir: Path) -> tuple[list[str], str | None]:
    """A finished run's outputs: the latest evaluation's attention map and
    samples file (written by ``write_eval_outputs``)."""
    maps = sorted((workdir / PLOTS_DIR).glob("attention_step_*.png"))
    texts = sorted((workdir / SAMPLES_DIR).glob("step_*.txt"))
    plots = [f"{PLOTS_DIR}/{p.name}" for p in maps[-1:]]
    return plots, (f"{SAMPLES_DIR}/{texts[-1].name}" if texts else None)
