"""A run's device memory is estimated from shapes (``jax.eval_shape``)
before anything is allocated or written: a vocabulary of 2^31 - 1 tokens,
10^8 classes or 10^7 steps is one line naming that size, and no run
directory is made; ``RECURRENT_JAX_MEMORY_LIMIT_GB`` moves the limit; and a
word-level language model of 10^4 words trains to completion under a
memory limit (its confusion plot no longer grows with V²)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("ml_collections")
pytest.importorskip("orbax.checkpoint")

import recurrent_jax as rj  # noqa: E402
from recurrent_jax import cli  # noqa: E402
from recurrent_jax.train import config_files, core, from_config_dict, memory  # noqa: E402
from recurrent_jax.train.config import ConfigError, base_config, shrink_to_smoke  # noqa: E402
from recurrent_jax.train.loop import train_and_evaluate  # noqa: E402

ROOT = Path(__file__).parents[1]

ARRAYS = """
from recurrent_jax.train.config import base_config, shrink_to_smoke

def get_config(arg=None):
    config = base_config("arrays", name="big")
    config.data.update(path="data.npz", batch_size={batch}, eval_size=4)
    config.model.update(hidden_size={hidden}, embedding_size={embedding})
    shrink_to_smoke(config)
    config.lock()
    return config
"""


def refused(tmp_path, capsys, x, embedding=None, batch=4, hidden=4) -> str:
    """Trains on ``x`` (y: 0/1 classes) from the CLI: the one line (exit 2)."""
    np.savez_compressed(tmp_path / "data.npz", x=x, y=np.arange(len(x)) % 2)
    text = ARRAYS.format(embedding=embedding, batch=batch, hidden=hidden)
    (tmp_path / "config.py").write_text(text)
    workdir = tmp_path / "run"
    code = cli.main(["train", f"--config={tmp_path / 'config.py'}", f"--workdir={workdir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("recurrent-jax: error: config: ") and "\n" not in err, err
    assert not workdir.exists()
    return err


def test_a_vocabulary_of_2_to_the_31_tokens_is_one_line(tmp_path, capsys):
    ids = np.zeros((4, 3), np.int32)
    ids[0, 0] = 2**31 - 2  # one token id: a vocabulary of 2^31 - 1, a 256 GiB embedding
    err = refused(tmp_path, capsys, ids, embedding=32)
    assert "an input vocabulary of 2147483647 tokens" in err
    assert "RECURRENT_JAX_MEMORY_LIMIT_GB" in err


def test_ten_million_steps_are_one_line(tmp_path, capsys):
    """Batches of 64 sequences of 10^7 steps: hundreds of GiB of residuals."""
    err = refused(tmp_path, capsys, np.zeros((3, 10**7, 1), np.float32), batch=64, hidden=32)
    assert "batches of 64 sequences of 10000000 steps" in err


def synthetic_task(name, steps, classes):
    """A task of ``classes`` classes over sequences of ``steps`` steps,
    drawn on the device (so nothing of that size is built on the host)."""

    def build(options):
        def sample(key, n):
            return rj.data.Batch(jnp.zeros((n, steps, 1)), jnp.zeros((n,), jnp.int32))

        return rj.data.TaskSpec(
            input_size=1, output_size=classes, kind="classification", output_mode="last",
            causal=False, sample_train=sample, eval_set=sample, baselines={},
            primary_metric="accuracy", higher_is_better=True,
        )  # fmt: skip

    return rj.data.register_task(rj.data.Task(name, "synthetic", "many-to-one", NoOptions, build))


@dataclasses.dataclass(frozen=True)
class NoOptions:
    pass


def test_a_hundred_million_classes_are_one_line(tmp_path):
    synthetic_task("many_classes", 4, 10**8)
    config = base_config("many_classes")
    config.model.update(hidden_size=8)
    shrink_to_smoke(config)
    with pytest.raises(ConfigError, match="config: this model needs about") as error:
        train_and_evaluate(from_config_dict(config), tmp_path / "run", progress=False)
    assert "100000000 classes" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_the_estimate_counts_what_a_step_holds():
    """Against the shapes counted by hand: the state three times (params
    and Adam's two moments), the params once more (gradients), and at
    least the batch."""
    config = from_config_dict(config_files.load_config("adding:smoke"))
    setup = core.make_setup(config)
    need = memory.estimate(setup, core.default_hparams(config))
    hparams = core.default_hparams(config)
    state = jax.eval_shape(lambda: core.init_state(setup, hparams, jax.random.key(0)))
    p = sum(np.prod(a.shape) * 4 for a in jax.tree_util.tree_leaves(state.params))
    assert need.state >= 3 * 3 * p  # params, mu, nu: three times
    batch = config.data.batch_size * config.data.options.seq_len * 2 * 4
    assert need.step >= p + batch
    assert need.evaluation >= config.data.eval_size * config.data.options.seq_len * 2 * 4


@pytest.mark.parametrize("limit, ok", [("1e-6", False), ("1000", True), ("none", None)])
def test_the_limit_is_set_by_the_environment(monkeypatch, tmp_path, capsys, limit, ok):
    monkeypatch.setenv(memory.LIMIT_ENV, limit)
    config = from_config_dict(config_files.load_config("adding:smoke"))
    setup = core.make_setup(config)
    if ok:
        memory.check_fits(setup, core.default_hparams(config))
        return
    message = "config: this model needs" if ok is False else f"{memory.LIMIT_ENV}: expected"
    with pytest.raises(ConfigError, match=message):
        memory.check_fits(setup, core.default_hparams(config))


WORD_LM = textwrap.dedent(
    """
    import resource, sys
    limit = int(float(sys.argv[2]) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from recurrent_jax import cli
    sys.exit(cli.main(["train", f"--config={sys.argv[1]}", "--workdir=run", "--no-progress"]))
    """
)

WORD_CONFIG = """
from recurrent_jax.train.config import base_config, shrink_to_smoke

def get_config(arg=None):
    config = base_config("text", name="words")
    config.data.update(path="words.txt", tokens="words", seq_len=8, batch_size=8, eval_size=64)
    config.model.update(hidden_size=8, embedding_size=8)
    shrink_to_smoke(config, 20)
    config.lock()
    return config
"""


@pytest.mark.slow
def test_a_word_model_of_ten_thousand_words_completes_under_a_memory_limit(tmp_path):
    words = [f"w{i}" for i in range(10_000)]
    rng = np.random.default_rng(0)
    text = " ".join(words + list(rng.choice(words, 30_000)))  # every word, then a jumble
    (tmp_path / "words.txt").write_text(text)
    (tmp_path / "config.py").write_text(WORD_CONFIG)
    result = subprocess.run(
        [sys.executable, "-c", WORD_LM, str(tmp_path / "config.py"), "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and "predictions.png" in summary["plots"]
    assert summary["final_eval"]["perplexity"] > 1
