"""A researcher's own task: which of three sines (by frequency) is in a
noisy series. ``config.data.task = "sines:make_task"``."""

import dataclasses

import jax
import jax.numpy as jnp

import recurrent_jax as rj


@dataclasses.dataclass(frozen=True)
class Options:  # its keys join config.data
    seq_len: int = 50
    noise: float = 0.5


def build(options: Options) -> rj.data.TaskSpec:
    def sample(key, n):  # pure and jittable: batches are drawn on the device
        k_class, k_phase, k_noise = jax.random.split(key, 3)
        label = jax.random.randint(k_class, (n,), 0, 3)
        phase = jax.random.uniform(k_phase, (n, 1), maxval=2 * jnp.pi)
        t = jnp.arange(options.seq_len)[None]
        wave = jnp.sin(0.2 * (label[:, None] + 1) * t + phase)
        noise = options.noise * jax.random.normal(k_noise, wave.shape)
        return rj.data.Batch(xs=(wave + noise)[..., None], targets=label)

    return rj.data.TaskSpec(
        input_size=1, output_size=3, kind="classification", output_mode="last",
        causal=False, sample_train=sample, eval_set=sample,
        baselines={"accuracy (guess)": 1 / 3}, primary_metric="accuracy",
        higher_is_better=True,
    )  # fmt: skip


def make_task() -> rj.data.Task:
    return rj.data.Task("three_sines", "which sine is in the noise", "many-to-one", Options, build)
