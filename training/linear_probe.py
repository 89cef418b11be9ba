"""Linear probe on frozen features (TVTS-SPEC.md, "Evaluation": SGD lr 0.1, batch 384, 100 epochs, frozen
[CLS]): a Linear(Dv, classes) trained on the train split's cached features, top-1/top-5 on the eval split.

- Features are standardised with the train split's per-dimension mean and std first: MAE's linear probe
  puts a BatchNorm without affine before its head for the same reason (a frozen encoder's [CLS] has no
  fixed scale; lr 0.1 is only right for unit-scale inputs), and fixed statistics make it deterministic.
- Training samples: every view of a training video (`train_on: views`, the cached 2 x 3 views act as
  augmentation) or one averaged feature per video (`mean`). Evaluation averages each video's views'
  logits (for a linear head the logits of the mean feature), the multi-view test of the protocol.
- SGD with momentum, cosine decay per step (or constant), init N(0, 0.01), zero bias; the seed fixes
  the init and the batch order, so a probe is a pure function of (features, settings, seed).
"""
from __future__ import annotations

import math

import torch

from training.eval_config import LinearProbeSettings
from training.metrics import topk_accuracy

__all__ = ["train_linear_probe", "probe_scores"]


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """train [..., D] and others scaled by the train set's per-dimension mean and std."""
    flat = train.reshape(-1, train.shape[-1])
    mean, std = flat.mean(dim=0), flat.std(dim=0).clamp(min=1e-6)
    return [(x - mean) / std for x in (train, *others)]


def train_linear_probe(x: torch.Tensor, y: torch.Tensor, classes: int, cfg: LinearProbeSettings, seed: int,
                       device: torch.device | str = "cpu") -> tuple[torch.nn.Linear, list[float]]:
    """x [N, D] float, y [N] long -> (trained Linear(D, classes) on the cpu, mean loss of each epoch)."""
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
        head.bias.zero_()
    head = head.to(device)
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    losses, step = [], 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        epoch_loss = 0.0
        for batch in order.split(cfg.batch_size):
            if cfg.schedule == "cosine":
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = torch.nn.functional.cross_entropy(head(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(batch)
            step += 1
        losses.append(epoch_loss / len(x))
    return head.cpu(), losses


@torch.no_grad()
def probe_scores(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                 classes: int, cfg: LinearProbeSettings, seed: int, device: torch.device | str = "cpu") -> dict:
    """train [Ntr, V, D], test [Nte, V', D] view features -> top-K (%) on test (and on train, to see fit)."""
    train, test = standardise(train.float(), test.float())
    if cfg.train_on == "views":
        x = train.reshape(-1, train.shape[-1])
        y = train_labels.repeat_interleave(train.shape[1])
    else:
        x, y = train.mean(dim=1), train_labels
    with torch.enable_grad():
        head, losses = train_linear_probe(x, y, classes, cfg, seed, device)
    ks = [k for k in cfg.ks if k <= classes] or [1]
    test_logits = head(test).mean(dim=1)                 # [Nte, C]: the views' logits averaged
    train_logits = head(train).mean(dim=1)
    return {**topk_accuracy(test_logits, test_labels, ks),
            **{f"train_{k}": v for k, v in topk_accuracy(train_logits, train_labels, ks).items()},
            "final_loss": losses[-1], "first_loss": losses[0]}
