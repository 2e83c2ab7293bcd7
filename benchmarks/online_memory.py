"""Memory and time per step of online learning (exact RTRL) against BPTT and
truncated BPTT, for the LRU over long streams.

    python benchmarks/online_memory.py                      # H = D = 128, B = 8
    python benchmarks/online_memory.py --steps 1000 10000   # fewer lengths
    python benchmarks/online_memory.py --no-time            # memory only
    python benchmarks/online_memory.py --steps 1000 --generic  # + RTRL with generic traces

Every method computes the gradient of Σ_t ½‖y_t W − target_t‖² over a
time-major stream (T, B, D), y from an LRU (``rj.cells.lru(H)``):

- ``forward``: ``rj.unroll`` alone, no gradient (the baseline of time);
- ``bptt``: ``jax.grad`` through the whole stream (impl="scan");
- ``tbptt-k``: the stream in windows of k steps, each window's gradient
  taken alone and summed, the carry passed on with its gradient stopped
  (what a truncated online learner does; biased);
- ``rtrl``: ``rj.online.accumulate`` with ``rj.online.rtrl`` (exact; for
  the LRU the rule written from its algebra);
- ``rtrl-generic`` (``--generic``): the same with the generic traces that
  ``rtrl`` uses for cells without a rule of their own (the LRU's before it).

Memory is XLA's compiled temp allocation (``compiled.memory_analysis()``:
the buffers a call needs beyond its inputs and outputs), so the stream
itself and the gradients are not counted; it is read for every T without
running. Time is the median of ``--repeats`` runs at each T of
``--time-steps`` (the methods interleaved round by round), divided by T.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import recurrent_jax as rj


def squared_error(head, y, target):
    return 0.5 * jnp.sum((y @ head - target) ** 2)


def methods(cell, input_size, window, generic=False):
    rtrl = rj.online.rtrl(cell, input_size)

    def forward(params, head, xs, targets):
        return squared_error(head, rj.unroll(cell, params, xs, time_major=True)[1], targets)

    def bptt(params, head, xs, targets):
        return jax.grad(forward, argnums=(0, 1))(params, head, xs, targets)

    def tbptt(params, head, xs, targets):
        split = lambda a: a.reshape(-1, window, *a.shape[1:])  # noqa: E731

        def window_loss(params, head, carry, xs, targets):
            carry, ys = rj.unroll(cell, params, xs, initial_carry=carry, time_major=True)
            return squared_error(head, ys, targets), carry

        def body(state, inputs):
            carry, total = state
            grads, carry = jax.grad(window_loss, argnums=(0, 1), has_aux=True)(
                params, head, carry, *inputs
            )
            total = jax.tree_util.tree_map(jnp.add, total, grads)
            return (jax.lax.stop_gradient(carry), total), None

        carry = cell.initial_carry(xs.shape[1:-1])
        zeros = jax.tree_util.tree_map(jnp.zeros_like, (params, head))
        return jax.lax.scan(body, (carry, zeros), (split(xs), split(targets)))[0][1]

    def online(params, head, xs, targets, learner=rtrl):
        out = rj.online.accumulate(
            learner, params, xs, squared_error, head, targets, time_major=True,
            return_outputs=False,
        )[1]  # fmt: skip
        return out.grads, out.head_grads

    table = {"forward": forward, "bptt": bptt, f"tbptt-{window}": tbptt, "rtrl": online}
    if generic:
        from recurrent_jax.online import _diagonal, _learner

        rule = _diagonal.exact_rule(rtrl.cell, input_size, specialised=False)
        slow = _learner.learner(rtrl.cell, rule, "rtrl")
        table["rtrl-generic"] = lambda *args: online(*args, learner=slow)
    return table


def measure(table, args, repeats):
    """{name: (temp MiB, ms per call or None)}; the calls of all methods
    interleaved round by round, so that a busy machine slows them alike."""
    compiled = {name: jax.jit(fn).lower(*args).compile() for name, fn in table.items()}
    temp = {name: c.memory_analysis().temp_size_in_bytes / 2**20 for name, c in compiled.items()}
    if not repeats:
        return {name: (temp[name], None) for name in table}
    times = {name: [] for name in table}
    for c in compiled.values():  # warm up
        jax.block_until_ready(c(*args))
    for _ in range(repeats):
        for name, c in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(c(*args))
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: (temp[name], statistics.median(times[name])) for name in table}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", type=int, default=[1000, 10_000, 100_000])
    parser.add_argument("--time-steps", nargs="+", type=int, default=[1000])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--window", type=int, default=100, help="k of truncated BPTT")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-time", action="store_true", help="memory only")
    parser.add_argument("--generic", action="store_true", help="also RTRL with generic traces")
    args = parser.parse_args(argv)
    B, H = args.batch, args.hidden
    cell = rj.cells.lru(H)
    params = cell.init(jax.random.PRNGKey(0), H)
    head = jax.random.normal(jax.random.PRNGKey(1), (H, 1)) / H**0.5
    table = methods(cell, H, args.window, args.generic)
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(f"LRU H=N=D={H}, B={B}, loss at every step; memory = compiled temp MiB")
    print("| method | T | temp MiB | ms / step | × forward |")
    print("|---|---|---|---|---|")
    for T in args.steps:
        if T % args.window:
            raise SystemExit(f"--steps: {T} is not a multiple of --window {args.window}")
        timed = not args.no_time and T in args.time_steps
        if timed:
            xs = jax.random.normal(jax.random.PRNGKey(2), (T, B, H))
            targets = jax.random.normal(jax.random.PRNGKey(3), (T, B, 1))
        else:
            xs = jax.ShapeDtypeStruct((T, B, H), jnp.float32)
            targets = jax.ShapeDtypeStruct((T, B, 1), jnp.float32)
        results = measure(table, (params, head, xs, targets), args.repeats if timed else 0)
        baseline = results["forward"][1]
        for name, (mib, ms) in results.items():
            per_step = "-" if ms is None else f"{ms / T:.4f}"
            ratio = "-" if ms is None else f"{ms / baseline:.1f}"
            print(f"| {name} | {T} | {mib:.2f} | {per_step} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
