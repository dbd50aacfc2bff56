"""Run by ``tests/test_multiprocess.py`` under ``torchrun --nproc_per_node 2``
(gloo, CPU): ``ktae`` and ``lambda_grpo`` on a generation batch whose middle
group straddles the two processes, through ``CreditGRPOTrainer._group_token_advantages``,
against one process holding every row and against the plain references. Prints
``OK <rank>`` when they agree."""

from __future__ import annotations

from types import SimpleNamespace

import reference_schemes as ref
import torch
from accelerate import Accelerator

from arca.trainer import CreditGRPOTrainer

G = 4


def trainer_like(accelerator: object, rewards: torch.Tensor) -> SimpleNamespace:
    """What ``_group_token_advantages`` reads of its trainer."""
    args = SimpleNamespace(
        advantage_estimator="grpo", ktae_alpha=1.0, ktae_beta=1.0, ktae_gamma_tf=True,
        ktae_top=1.0, high_entropy_quantile=0.2, oracle_share=0.5, oracle_rest="uniform",
        oar_quantile=0.5, oar_beta=1.0,
    )  # fmt: skip
    tr = SimpleNamespace(
        accelerator=accelerator,
        args=args,
        processing_class=SimpleNamespace(pad_token_id=0, eos_token_id=2),
        num_generations=G,
        num_generations_eval=G,
        model=SimpleNamespace(training=True),
        reward_weights=torch.ones(1),
        correct_reward=None,
        _group_schemes=("ktae", "lambda_grpo"),
        _rewards_per_func=rewards[:, None],  # every process's, as TRL gathers them
    )
    tr._rollout_advantages = lambda out: CreditGRPOTrainer._rollout_advantages(tr, out)
    tr._scheme_options = lambda name: CreditGRPOTrainer._scheme_options(tr, name)
    return tr


def batch(rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Right-padded completions (pad id 0), as TRL lays them out."""
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"completion_ids": ids, "completion_mask": mask}


def main() -> None:
    acc = Accelerator(cpu=True)
    rank = acc.process_index
    assert acc.num_processes == 2
    g = torch.Generator().manual_seed(0)  # the same global batch on both ranks
    rows = []
    for _ in range(3 * G):  # 3 groups of 4; group 1 is rows 4-7, split 4-5 | 6-7
        n = int(torch.randint(1, 9, (1,), generator=g))
        rows.append(torch.randint(3, 7, (n,), generator=g).tolist())
    rows[4 * 1 + 3] = rows[4 * 1][:2] + rows[4 * 1 + 3]  # a prefix shared across processes
    rows[5][-1] = 2  # an end-of-sequence token (zeroed by KTAE)
    rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 0])
    adv = torch.tensor(ref.grpo_advantages(rewards.tolist(), G, eps=1e-4))
    # Process r holds rows 6r .. 6r + 5; its own padding is its own rows' longest.
    local = batch(rows[6 * rank : 6 * rank + 6]) | {"advantages": adv[6 * rank : 6 * rank + 6]}
    two = CreditGRPOTrainer._group_token_advantages(trainer_like(acc, rewards), local)
    alone = trainer_like(SimpleNamespace(num_processes=1, process_index=0), rewards)
    one = CreditGRPOTrainer._group_token_advantages(alone, batch(rows) | {"advantages": adv})
    T = local["completion_ids"].shape[1]
    expect = {
        "ktae": ref.ktae_token_advantages(
            rows, rewards.tolist(), G, advantages=adv.tolist(), zero_token_ids=(2, 0)
        ),
        "lambda_grpo": ref.lambda_grpo_token_advantages(
            rows, rewards.tolist(), G, advantages=adv.tolist()
        ),
    }
    mask = local["completion_mask"].bool()
    for name in ("ktae", "lambda_grpo"):
        key = f"arca_ta_{name}"
        assert two[key].shape == (6, T), (name, two[key].shape)
        torch.testing.assert_close(two[key], one[key][6 * rank : 6 * rank + 6, :T])
        for i in range(6):
            got = two[key][i][mask[i]].tolist()
            want = expect[name][6 * rank + i]
            torch.testing.assert_close(torch.tensor(got), torch.tensor(want, dtype=torch.float32))
    # The straddling group shares a prefix across the processes: lambda-GRPO sees it.
    if rank == 1:
        assert float(two["arca_ta_lambda_grpo"][1, 0]) != float(adv[7])
    print(f"OK {rank}", flush=True)


if __name__ == "__main__":
    main()
