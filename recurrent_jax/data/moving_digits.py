"""Moving digits: next-frame prediction of scikit-learn's 8x8 digits moving
on a small canvas, bouncing off its edges (a Moving-MNIST in miniature,
generated on device).

A sequence is ``seq_len`` frames (``canvas`` × ``canvas`` × 1) of one digit
at p_t = reflect(p_0 + v t), p_0 uniform and v a nonzero velocity with
components in [-``max_speed``, ``max_speed``]; inputs are frames 0..T−2, the
targets frames 1..T−1 (many-to-many regression, per pixel). The digits of
the held-out split never appear in training. Baselines: predicting a blank
frame, and repeating the last frame (which a model beats only by learning
the motion).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.data.base import REGRESSION, SEQUENCE, Batch, Task, TaskSpec
from recurrent_jax.data.digits import load_digits_split

DIGIT = 8  # pixels per side of a scikit-learn digit


@dataclasses.dataclass(frozen=True)
class MovingDigitsOptions:
    canvas: int = 16
    seq_len: int = 10
    max_speed: int = 2
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self):
        if not isinstance(self.canvas, int) or self.canvas < DIGIT + 1:
            _checks.fail("canvas", f"an int > {DIGIT} (the digits' size)", self.canvas)
        if not isinstance(self.seq_len, int) or self.seq_len < 3:
            _checks.fail("seq_len", "an int >= 3", self.seq_len)
        _checks.check_positive("max_speed", self.max_speed)
        if not 0.0 < self.test_fraction < 1.0:
            _checks.fail("test_fraction", "a fraction in (0, 1)", self.test_fraction)
        _checks.check_non_negative("split_seed", self.split_seed)


def reflect(position, span: int):
    """``position`` folded into [0, span] as a ball bouncing between walls."""
    period = 2 * span
    p = jnp.mod(position, period)
    return jnp.where(p > span, period - p, p)


def render(images, key, num_frames: int, canvas: int, max_speed: int):
    """(N, num_frames, canvas, canvas, 1) frames of ``images`` (N, 8, 8) moving."""
    k_pos, k_vel = jax.random.split(key)
    n = images.shape[0]
    span = canvas - DIGIT
    start = jax.random.randint(k_pos, (n, 2), 0, span + 1)
    speeds = jnp.asarray([s for s in range(-max_speed, max_speed + 1) if s != 0])
    velocity = jax.random.choice(k_vel, speeds, (n, 2))
    steps = jnp.arange(num_frames)
    positions = reflect(start[:, None] + velocity[:, None] * steps[None, :, None], span)

    def frame(image, position):
        blank = jnp.zeros((canvas, canvas), image.dtype)
        return jax.lax.dynamic_update_slice(blank, image, (position[0], position[1]))

    frames = jax.vmap(jax.vmap(frame, in_axes=(None, 0)))(images, positions)
    return frames[..., None]


def build_moving_digits(options: MovingDigitsOptions) -> TaskSpec:
    (x_tr, _), (x_te, _) = load_digits_split(options.test_fraction, options.split_seed)
    train = jnp.asarray(x_tr.reshape(-1, DIGIT, DIGIT))
    test = jnp.asarray(x_te.reshape(-1, DIGIT, DIGIT))

    def sample(images):
        def draw(key, batch_size):
            k_img, k_motion = jax.random.split(key)
            chosen = images[jax.random.randint(k_img, (batch_size,), 0, images.shape[0])]
            frames = render(chosen, k_motion, options.seq_len, options.canvas, options.max_speed)
            return Batch(frames[:, :-1], frames[:, 1:])

        return draw

    pixels = options.canvas**2
    ink = float(jnp.mean(jnp.square(test))) * DIGIT**2 / pixels
    return TaskSpec(
        input_size=1,
        output_size=1,
        kind=REGRESSION,
        output_mode=SEQUENCE,
        causal=True,
        sample_train=sample(train),
        eval_set=sample(test),
        baselines={
            "mse (blank frame)": ink,
            "mse (repeat the last frame)": _repeat_last(test, options),
        },
        primary_metric="mse",
        higher_is_better=False,
        info={"train digits": int(train.shape[0]), "test digits": int(test.shape[0])},
        spatial_shape=(options.canvas, options.canvas),
    )


def _repeat_last(images, options: MovingDigitsOptions) -> float:
    """The MSE of predicting frame t+1 as frame t, on the held-out digits."""
    frames = render(images, jax.random.key(0), options.seq_len, options.canvas, options.max_speed)
    return float(jnp.mean(jnp.square(frames[:, 1:] - frames[:, :-1])))


TASKS = [
    Task(
        "moving_digits",
        "next-frame prediction of 8x8 digits moving on a canvas (Moving-MNIST in miniature)",
        "many-to-many aligned regression over frames",
        MovingDigitsOptions,
        build_moving_digits,
    ),
]
