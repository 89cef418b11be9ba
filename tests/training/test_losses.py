"""TVTS losses: the contrastive loss against a direct computation, the sort loss and accuracies, and the
cross-rank gather (2 gloo processes == one process on the concatenated batch, losses and gradients)."""
from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.nn.functional as F

from training.losses import contrastive_loss, gather_with_grad, sort_loss_and_accuracy


def direct_contrastive(video: list[list[float]], text: list[list[float]], tau: float) -> float:
    """Symmetric InfoNCE written out with plain Python floats."""
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    n = len(video)
    sim = [[cos(video[i], text[j]) / tau for j in range(n)] for i in range(n)]
    v2t = sum(-sim[i][i] + math.log(sum(math.exp(sim[i][j]) for j in range(n))) for i in range(n)) / n
    t2v = sum(-sim[j][j] + math.log(sum(math.exp(sim[i][j]) for i in range(n))) for j in range(n)) / n
    return (v2t + t2v) / 2


def test_contrastive_loss_equals_a_direct_computation():
    video = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.3, -1.0]]
    text = [[0.9, 0.1, 0.0], [0.0, 1.0, 0.2], [0.5, -0.5, 0.5]]
    for tau in (0.05, 1.0):
        loss = contrastive_loss(F.normalize(torch.tensor(video), dim=-1),
                                F.normalize(torch.tensor(text), dim=-1), tau)
        assert loss.item() == pytest.approx(direct_contrastive(video, text, tau), rel=1e-5)


def test_contrastive_loss_is_small_for_matched_pairs_and_large_for_swapped():
    emb = torch.eye(4)
    assert contrastive_loss(emb, emb, 0.05) < 1e-6
    assert contrastive_loss(emb, emb[[1, 0, 2, 3]], 0.05) > 5.0


def test_sort_loss_and_accuracies_on_hand_made_logits():
    # Sample 0: all 4 transcripts put right. Sample 1: slots 0 and 1 swapped, slots 2 and 3 right.
    positions = torch.tensor([[2, 0, 3, 1], [1, 3, 0, 2]])
    logits = torch.full((2, 4, 4), -10.0)
    logits[0, torch.arange(4), positions[0]] = 10.0
    logits[1, torch.arange(4), torch.tensor([3, 1, 0, 2])] = 10.0
    loss, sort_acc, pos_acc = sort_loss_and_accuracy(logits, positions)
    assert sort_acc.item() == 0.5 and pos_acc.item() == 0.75
    expected = F.cross_entropy(logits.view(8, 4), positions.view(8))
    assert loss.item() == pytest.approx(expected.item())
    assert sort_loss_and_accuracy(torch.zeros(3, 4, 4), positions[:1].repeat(3, 1))[0].item() == \
        pytest.approx(math.log(4))                                   # uniform scores: chance


def test_gather_is_a_noop_in_one_process():
    x = torch.randn(3, 5)
    assert gather_with_grad(x) is x


# ---- two processes over gloo ----
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _setup_inputs():
    """A shared linear 'tower' and a global batch of 6 video/text feature pairs (same on every rank)."""
    torch.manual_seed(0)
    video_tower, text_tower = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    video_feats, text_feats = torch.randn(6, 8), torch.randn(6, 8)
    return video_tower, text_tower, video_feats, text_feats


def _loss_and_grads(video_tower, text_tower, video_feats, text_feats, gather_grad="global"):
    video = F.normalize(video_tower(video_feats), dim=-1)
    text = F.normalize(text_tower(text_feats), dim=-1)
    loss = contrastive_loss(video, text, 0.05, gather_grad=gather_grad)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in (*video_tower.parameters(), *text_tower.parameters())]


def _rank_main(rank: int, world: int, port: int, out_path: str, gather_grad: str = "global") -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        video_tower, text_tower, video_feats, text_feats = _setup_inputs()
        shard = slice(rank * 3, (rank + 1) * 3)                     # this rank's half of the batch
        loss, grads = _loss_and_grads(video_tower, text_tower, video_feats[shard], text_feats[shard], gather_grad)
        for grad in grads:                                          # data-parallel gradient average (DDP/DeepSpeed)
            dist.all_reduce(grad)
            grad /= world
        losses = [torch.zeros(()) for _ in range(world)]
        dist.all_gather(losses, loss)
        if rank == 0:
            torch.save({"losses": losses, "grads": grads}, out_path)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process_on_the_concatenated_batch(tmp_path):
    import torch.multiprocessing as mp

    out_path = str(tmp_path / "rank0.pt")
    mp.spawn(_rank_main, args=(2, _free_port(), out_path), nprocs=2, join=True)
    result = torch.load(out_path)

    single_loss, single_grads = _loss_and_grads(*_setup_inputs())
    for rank_loss in result["losses"]:                              # every rank sees the global loss
        assert rank_loss.item() == pytest.approx(single_loss.item(), rel=1e-5)
    for grad, expected in zip(result["grads"], single_grads):
        assert torch.allclose(grad, expected, atol=1e-5), (grad - expected).abs().max()


def test_local_gather_grad_is_the_authors_one_over_world_size(tmp_path):
    """loss.gather_grad=local (the authors' code): the same loss value on every rank, but after the
    data-parallel average the gradient is exactly the global one divided by world_size."""
    import torch.multiprocessing as mp

    out_path = str(tmp_path / "rank0.pt")
    mp.spawn(_rank_main, args=(2, _free_port(), out_path, "local"), nprocs=2, join=True)
    result = torch.load(out_path)
    single_loss, single_grads = _loss_and_grads(*_setup_inputs())
    for rank_loss in result["losses"]:
        assert rank_loss.item() == pytest.approx(single_loss.item(), rel=1e-5)
    for grad, expected in zip(result["grads"], single_grads):
        assert torch.allclose(grad, expected / 2, atol=1e-5), (grad - expected / 2).abs().max()


def test_summed_directions_are_twice_the_mean():
    torch.manual_seed(1)
    video, text = F.normalize(torch.randn(5, 4), dim=-1), F.normalize(torch.randn(5, 4), dim=-1)
    mean = contrastive_loss(video, text, 0.05)
    assert contrastive_loss(video, text, 0.05, directions="sum").item() == pytest.approx(2 * mean.item(), rel=1e-6)
