"""Run by ``tests/test_multiprocess.py`` under ``torchrun --nproc_per_node 2``
(gloo, CPU): ``high_entropy``'s weights of one micro-batch whose rows are split
over two processes, through ``CreditGRPOTrainer._weights``, against one process
holding every row and against TRL's ``get_high_entropy_mask`` on the same split.
Prints ``OK <rank>`` when they agree."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from accelerate import Accelerator
from trl import GRPOTrainer

from arca.credit import normalize, token_weights
from arca.trainer import CreditGRPOTrainer

Q = 0.2


def trainer_like(accelerator: object) -> SimpleNamespace:
    """What ``CreditGRPOTrainer._weights`` reads of its trainer."""
    args = SimpleNamespace(high_entropy_quantile=Q, weight_eps=1e-8, weight_eps_mode="absolute")
    tr = SimpleNamespace(accelerator=accelerator, args=args)
    tr._entropy_pool = lambda e, m: CreditGRPOTrainer._entropy_pool(tr, e, m)
    return tr


def main() -> None:
    acc = Accelerator(cpu=True)
    rank = acc.process_index
    assert acc.num_processes == 2
    g = torch.Generator().manual_seed(0)  # the same micro-batch on both ranks
    # 8 ragged rows; later rows are more uncertain, so each process's half has
    # a threshold of its own, unlike the whole micro-batch's.
    entropies = torch.rand(8, 12, generator=g) + 0.25 * torch.arange(8.0)[:, None]
    mask = torch.arange(12)[None] < torch.randint(4, 13, (8,), generator=g)[:, None]
    rows = slice(4 * rank, 4 * rank + 4)
    local = {"entropies": entropies[rows]}
    two = CreditGRPOTrainer._weights(trainer_like(acc), "high_entropy", mask[rows], local)
    alone = trainer_like(SimpleNamespace(num_processes=1))
    one = CreditGRPOTrainer._weights(alone, "high_entropy", mask, {"entropies": entropies})
    torch.testing.assert_close(two, one[rows])
    trl = GRPOTrainer.get_high_entropy_mask(trainer_like(acc), entropies[rows], mask[rows], 1 - Q)
    torch.testing.assert_close(two, normalize(trl.float(), mask[rows], 1e-8))
    # The half's own threshold would give other weights: the check above can fail.
    half = token_weights("high_entropy", mask=mask[rows], options={"quantile": Q}, **local)
    assert not torch.allclose(half, one[rows])
    print(f"OK {rank}", flush=True)


if __name__ == "__main__":
    main()
