"""``lambda_grpo``: GRPO's implicit process reward, de-duplicated (Sullivan and
Koller, "GRPO is Secretly a Process Reward Model", arXiv 2509.21154).

The completions of a group share prefixes. A token of row ``i`` shared
(tokens ``0..t`` equal) with ``|lambda_it|`` completions of its group (itself
included) is the same token in the same context in all of them, so GRPO's
pushes on it add up; lambda-GRPO divides each row's push by that count:
``a_it = A_i / |lambda_it|``. The group's net push on a shared token is then the
process set's mean advantage (its Monte-Carlo process reward). Tokens after a
completion has left every other keep ``A_i``. The advantage mass shrinks on
shared prefixes; a token's sign is always ``A_i``'s. No option, no extra pass.

The definition follows the official code (github.com/coli-saar/grpo-prm at
6bc58b1, ``lambda_grpo/utils.py``: ``InfPRMTree``, ``InfPRMNode._loss_scale``);
docs/credit-schemes.md section 5, and ``tests/reference_schemes.py``'s
``process_set_sizes`` is the plain reference. The end-of-sequence token counts
like any sampled token; padding is never shared: a completion that has ended
shares no later token.

The mask here is the completion's tokens, not a loss mask: a prefix is the
context a token is sampled in, so tokens the policy did not sample but reads
(a tool's output) are part of it, and two completions whose tool outputs differ
share no later token. A mask with a hole between real tokens (``completion_mask
* tool_mask``) is refused (dropping the hole would join the prefixes around it);
give the completion mask and zero the credit of the untrained positions
afterwards, as the trainer does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from arca.credit.schemes import register_scheme


def _compact(mask: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each row's real tokens moved to the front, in order: ``(ids, real, order)``
    ``(B, T)`` each, where ``order[i, j]`` is the padded position of row ``i``'s
    ``j``-th real token. ``mask`` ``(B, T)`` bool must be the completions' tokens
    with padding only at a row's ends (ValueError otherwise: see the module)."""
    T = mask.shape[1]
    pos = torch.arange(T, device=mask.device)
    first = torch.where(mask, pos, T).amin(dim=1)
    last = torch.where(mask, pos, -1).amax(dim=1)
    holed = (last - first + 1).clamp_min(0) != mask.sum(dim=1)
    if bool(holed.any()):
        row = int(holed.nonzero()[0])
        raise ValueError(
            f"lambda_grpo: mask row {row} has a hole between real tokens; the mask must be "
            "the completion's tokens (padding at either end only), since a masked-out "
            "token (a tool output) is still context that ends a shared prefix: pass the "
            "completion mask and zero the untrained positions' credit afterwards"
        )
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    return ids.gather(1, order), mask.gather(1, order), order


def process_set_sizes(mask: Tensor, completion_ids: Tensor, group: Tensor) -> Tensor:
    """``|lambda_it|``: how many completions of row ``i``'s group equal it on
    its real tokens ``0..t`` (itself included).

    Args:
        mask: ``(B, T)`` bool, 1 = a token of the completion, sampled or not
            (a tool's output included); padding on either side, no holes.
        completion_ids: ``(B, T)`` integer token ids.
        group: ``(B,)`` integer group of each row (need not be consecutive).

    Returns ``(B, T)`` long, ``>= 1`` at real tokens, 0 on padding. Per group
    (a loop over groups) an ``(G, G, T)`` comparison of prefixes.
    """
    B, T = mask.shape
    ids, real, order = _compact(mask, completion_ids)
    sizes_c = torch.zeros(B, T, dtype=torch.long, device=mask.device)
    groups = group.to(mask.device)
    for g in torch.unique(groups):
        rows = (groups == g).nonzero().flatten()
        gi, gr = ids[rows], real[rows]
        # Row j shares row i's token t if both are real there with the same id;
        # the prefix is shared while every token so far is.
        same = (gi[:, None, :] == gi[None, :, :]) & gr[:, None, :] & gr[None, :, :]
        prefix = same.to(torch.int8).cumprod(dim=2)
        sizes_c[rows] = prefix.sum(dim=1).to(torch.long) * gr
    sizes = torch.zeros_like(sizes_c).scatter_(1, order, sizes_c)
    return torch.where(mask, sizes, 0)


def lambda_grpo_token_advantages(
    mask: Tensor, completion_ids: Tensor, group: Tensor, advantages: Tensor
) -> Tensor:
    """``a_it = A_i / |lambda_it|`` ``(B, T)``, zero on padding, in ``advantages``'
    float dtype (float32 unless float64). Shapes and ``mask`` as in
    :func:`process_set_sizes` (the completion's tokens: zero the credit of
    untrained ones, a tool's output, afterwards); ``advantages`` ``(B,)``."""
    dt = torch.float64 if advantages.dtype == torch.float64 else torch.float32
    sizes = process_set_sizes(mask, completion_ids, group).to(dt)
    a = advantages.to(device=mask.device, dtype=dt)[:, None] / sizes.clamp_min(1)
    return torch.where(mask, a, 0.0)


def process_mean_advantages(
    mask: Tensor, completion_ids: Tensor, group: Tensor, advantages: Tensor
) -> Tensor:
    """The implicit process reward: token ``t`` of row ``i`` gets the mean
    advantage of the completions sharing its prefix through ``t``, the net push
    lambda-GRPO puts on that shared token.

    Args:
        mask: ``(B, T)`` bool, the completion's tokens, as in
            :func:`process_set_sizes` (no holes).
        completion_ids: ``(B, T)`` integer token ids.
        group: ``(B,)`` integer group of each row.
        advantages: ``(B,)`` float, the rows' scalar advantages ``A_i``.

    Returns ``(B, T)`` in ``advantages``' float dtype (float32 unless float64),
    zero on padding."""
    B, T = mask.shape
    dt = torch.float64 if advantages.dtype == torch.float64 else torch.float32
    ids, real, order = _compact(mask, completion_ids)
    adv = advantages.to(device=mask.device, dtype=dt)
    out_c = torch.zeros(B, T, dtype=dt, device=mask.device)
    groups = group.to(mask.device)
    for g in torch.unique(groups):
        rows = (groups == g).nonzero().flatten()
        gi, gr = ids[rows], real[rows]
        same = (gi[:, None, :] == gi[None, :, :]) & gr[:, None, :] & gr[None, :, :]
        prefix = same.to(dt).cumprod(dim=2)  # (i, j, t)
        total = (prefix * adv[rows][None, :, None]).sum(dim=1)
        count = prefix.sum(dim=1)
        out_c[rows] = torch.where(count > 0, total / count.clamp_min(1), 0.0)
    out = torch.zeros_like(out_c).scatter_(1, order, out_c)
    return torch.where(mask, out, 0.0)


@register_scheme(
    "lambda_grpo",
    requires=("completion_ids", "group", "advantages"),
    kind="advantages",
    description="lambda-GRPO (arXiv 2509.21154): A_i / |lambda_it|, the push on a prefix "
    "shared by |lambda_it| completions of the group divided among them; shrinks the "
    "advantage mass, never flips a sign",
)
def _lambda_grpo(
    *, mask: Tensor, completion_ids: Tensor, group: Tensor, advantages: Tensor
) -> Tensor:
    return lambda_grpo_token_advantages(mask, completion_ids, group, advantages)


__all__ = ["lambda_grpo_token_advantages", "process_mean_advantages", "process_set_sizes"]
