"""A progress bar over training steps (tqdm: steps/s and ETA) with a plain
fallback, and the per-evaluation log line."""

from __future__ import annotations


class Progress:
    def __init__(self, total: int, initial: int, *, enabled: bool = True):
        self.enabled, self.bar = enabled, None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, step: int, train: dict) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{train['loss']:.4g}", refresh=False)

    def write(self, step: int, train: dict, evals: dict) -> None:
        if not self.enabled:
            return
        line = f"step {step:6d}  train loss {train['loss']:.5g}  " + "  ".join(
            f"eval {k} {v:.5g}" for k, v in evals.items()
        )
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
