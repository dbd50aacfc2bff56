"""Run by ``tests/test_multiprocess.py`` under ``torchrun --nproc_per_node 2``:
arca's captures on a peft model wrapped in FSDP1 on CPU (gloo), with peft's
auto-wrap policy, which puts every LoRA module in an FSDP unit of its own, so
a hook on a LoRA layer runs after its ``lora_A``/``lora_B`` weights have been
resharded. Prints ``OK <rank>`` when every capture equals the unwrapped model's."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from peft.utils.other import fsdp_auto_wrap_policy
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import ShardingStrategy

from arca.models import add_lora, tiny_qwen3
from arca.scoring import capture_adapter_deltas, capture_adapter_shift, capture_final_hidden


def captures(model: torch.nn.Module, probe: torch.nn.Module, ids: torch.Tensor, C: int) -> dict:
    with (
        capture_adapter_deltas(probe, C) as deltas,
        capture_adapter_shift(probe, C) as shift,
        capture_final_hidden(probe, C) as hidden,
        torch.no_grad(),
    ):
        # logits_to_keep=1: how the trainer runs its body-only pass, through the wrapper.
        model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1)
    return {"deltas": deltas, "shift": shift, "hidden": hidden}


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same model and inputs on every rank
    model = add_lora(tiny_qwen3(vocab_size=128, hidden_size=32, seed=0), rank=4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    model.eval()
    ids = torch.randint(3, 128, (2, 12))
    C = 5
    want = captures(model, model, ids, C)
    wrapped = FSDP(
        model,
        auto_wrap_policy=fsdp_auto_wrap_policy(model),
        sharding_strategy=ShardingStrategy.FULL_SHARD,
        device_id=torch.device("cpu"),
        use_orig_params=True,
        sync_module_states=False,
    )
    lora_a = next(p for n, p in wrapped.named_parameters() if "lora_A" in n)
    # Outside the forward, the LoRA weights are this rank's shard (empty on some).
    assert lora_a.numel() < 4 * 32, lora_a.shape
    got = captures(wrapped, wrapped.module, ids, C)
    assert got["deltas"].keys() == want["deltas"].keys()
    for k in want["deltas"]:
        torch.testing.assert_close(got["deltas"][k][0], want["deltas"][k][0])
    torch.testing.assert_close(got["shift"][0], want["shift"][0])
    torch.testing.assert_close(got["hidden"][0], want["hidden"][0])
    print(f"OK {rank}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
