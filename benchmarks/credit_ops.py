"""Cost of the arca.credit ops on one batch, per device.

    python benchmarks/credit_ops.py [--B 32] [--T 1024] [--d 2048]

Prints median milliseconds per call of each scheme's token_weights (inputs
already computed) and of the diagnostics, next to the size of the batch. A
reference point for "credit assignment is negligible next to a forward pass";
the trainer-level benchmark (step time ratios) is benchmarks/ (issue 7).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from arca.credit import (
    credit_correctness,
    effective_token_ratio,
    gini,
    group_advantages,
    signed_credit_correctness,
    token_advantages,
    token_weights,
)


def bench(fn: Callable[[], object], device: str, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def device_ops(dev: str, B: int, T: int, d: int) -> dict[str, Callable[[], object]]:
    """The ops to time, closed over one device's inputs."""
    g = torch.Generator(device=dev).manual_seed(0)
    lengths = torch.randint(T // 4, T + 1, (B,), device=dev, generator=g)
    mask = torch.arange(T, device=dev)[None] < lengths[:, None]
    lp = -torch.rand(B, T, device=dev, generator=g) * 5
    ins = {
        "logps": lp,
        "ref_logps": lp - 0.01 * torch.rand(B, T, device=dev, generator=g),
        "entropies": torch.rand(B, T, device=dev, generator=g) * 3,
        "h_adapted": torch.randn(B, T, d, device=dev, generator=g).bfloat16(),
        "h_base": torch.randn(B, T, d, device=dev, generator=g).bfloat16(),
    }
    w = token_weights("surprisal", mask=mask, **ins)
    rewards = torch.rand(B, device=dev)
    ops: dict[str, Callable[[], object]] = {
        f"token_weights({s})": partial(token_weights, s, mask=mask, **ins)
        for s in ("uniform", "surprisal", "entropy", "divergence", "arca", "high_entropy")
    }
    ops["gini"] = partial(gini, w, mask)
    # Ground truth: each row's first error half-way through its real tokens.
    ops["credit_correctness"] = partial(credit_correctness, w, mask, (lengths // 2).long())
    ops["effective_token_ratio"] = partial(effective_token_ratio, w, mask)
    ops["group_advantages"] = partial(group_advantages, rewards, 4)
    # The field's schemes, in groups of 4 (TRL's layout). Token ids from a
    # 5,000-id slice of a vocabulary, so a group's completions share ids; each
    # group's rows share their first quarter (a common opening), as sampled ones do.
    adv = group_advantages(rewards, 4)
    ids = torch.randint(0, 5000, (B, T), device=dev, generator=g)
    ids = ids.view(-1, 4, T)
    ids[:, :, : T // 4] = ids[:, :1, : T // 4]
    ids = ids.view(B, T)
    group = torch.arange(B, device=dev) // 4
    correct = rewards > 0.5
    err = (lengths // 2).long()
    ops["token_advantages(oracle)"] = partial(
        token_advantages, "oracle", mask=mask, advantages=adv, error_index=err
    )
    ops["token_advantages(ktae)"] = partial(
        token_advantages, "ktae", mask=mask, advantages=adv, completion_ids=ids,
        correct=correct, group=group,
    )  # fmt: skip
    ops["token_advantages(lambda_grpo)"] = partial(
        token_advantages, "lambda_grpo", mask=mask, advantages=adv, completion_ids=ids, group=group
    )
    ops["token_advantages(oar_g)"] = partial(
        token_advantages, "oar_g", mask=mask, advantages=adv,
        saliency=torch.rand(B, T, device=dev, generator=g), answer_start=(lengths * 3 // 4).long(),
    )  # fmt: skip
    a = token_advantages("lambda_grpo", mask=mask, advantages=adv, completion_ids=ids, group=group)
    ops["signed_credit_correctness"] = partial(
        signed_credit_correctness, a, mask, err, advantages=adv
    )
    return ops


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--d", type=int, default=2048)
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    B, T, d = args.B, args.T, args.d
    print(f"batch B={B} T={T} d={d}; hidden states bf16; torch {torch.__version__}")
    print(f"{'op':<32}" + "".join(f"{dev:>12}" for dev in devices) + "   (median ms)")
    results: dict[str, list[float]] = {}
    for dev in devices:
        for name, fn in device_ops(dev, B, T, d).items():
            results.setdefault(name, []).append(bench(fn, dev))
    for name, vals in results.items():
        print(f"{name:<32}" + "".join(f"{v:12.3f}" for v in vals))


if __name__ == "__main__":
    main()
