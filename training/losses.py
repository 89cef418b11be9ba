"""TVTS losses: the video-text contrastive loss (L_base) and the transcript sorting loss (L_sort).

Total = L_base + sort_weight * L_sort (sort_weight 2 in the paper). See ../shared/TVTS-SPEC.md, "Losses".

Distributed contract: every rank computes the SAME global contrastive loss over the embeddings gathered
from all ranks. The gather's backward sums the gradient of that loss over ranks and keeps the local
shard's part, so each rank's local gradient is world_size x d(loss)/d(local embeddings); the usual
data-parallel gradient AVERAGE (DDP, DeepSpeed) then gives exactly the gradient of the global loss,
the same as one process on the concatenated batch (tests/training/test_losses.py checks this).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F

from training.metrics import sort_accuracies

_LOCAL_ONLY = [False]


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Losses over this rank's batch alone, no gather: for work that one rank does by itself (the
    held-out evaluation during training), where a collective would wait for ranks that never join."""
    previous, _LOCAL_ONLY[0] = _LOCAL_ONLY[0], True
    try:
        yield
    finally:
        _LOCAL_ONLY[0] = previous


def _distributed() -> bool:
    return not _LOCAL_ONLY[0] and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank its shard of the summed gradient (works on gloo and NCCL:
    it needs only all_gather and all_reduce)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:          # local [b, D] -> [world * b, D]
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, local.shape[0]
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:          # grad [world * b, D]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)                 # every rank's loss touched every shard
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate `local` [b, ...] from all ranks in rank order; a no-op in one process.
    Every rank must pass the same b."""
    if not _distributed():
        return local
    return _GatherWithGrad.apply(local)


def gather_local_grad(local: torch.Tensor) -> torch.Tensor:
    """Like `gather_with_grad`, but the other ranks' rows are constants: the gradient of this rank's loss
    reaches its own rows only (the authors' `AllGather`-then-replace). A no-op in one process."""
    if not _distributed():
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.detach().contiguous())
    parts[dist.get_rank()] = local
    return torch.cat(parts, dim=0)


def contrastive_loss(video_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float,
                     gather_grad: str = "global", directions: str = "mean") -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalised embeddings [b, D] (local shard), gathered over ranks.

    logits[i, j] = cos(video_i, text_j) / tau over the global batch; the pair (i, i) is the positive;
    the loss is the mean (`directions="mean"`) or the sum ("sum") of the video->text and text->video
    cross-entropies. `gather_grad` (model.loss.gather_grad): "global" differentiates the global loss
    exactly; "local" through this rank's rows only (module docstring, LossConfig).
    """
    gather = gather_with_grad if gather_grad == "global" else gather_local_grad
    videos = gather(video_emb)                                      # [B, D], B = world * b
    texts = gather(text_emb)                                        # [B, D]
    logits = videos.float() @ texts.float().t() / temperature       # [B, B], fp32 even under bf16
    target = torch.arange(logits.shape[0], device=logits.device)
    both = F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)
    return both if directions == "sum" else 0.5 * both


def sort_loss_and_accuracy(logits: torch.Tensor, positions: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [B, K, K] (slot i -> score of each true position), positions [B, K] (true position of slot i).

    Returns (cross-entropy over the K positions averaged over all B*K transcripts,
             sort accuracy: fraction of samples with all K positions right (chance (1/K)^K),
             position accuracy: fraction of transcripts put at their right position (chance 1/K)).
    """
    K = logits.shape[-1]
    loss = F.cross_entropy(logits.float().reshape(-1, K), positions.reshape(-1))
    with torch.no_grad():
        sort_acc, pos_acc = sort_accuracies(logits, positions)
    return loss, sort_acc, pos_acc
