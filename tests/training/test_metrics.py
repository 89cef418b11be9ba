"""training/metrics.py on hand-made similarity matrices and sort logits: exact ranks, not bounds."""
from __future__ import annotations

import math

import pytest
import torch

from training import metrics
from training.metrics import median_rank, retrieval_metrics, sort_accuracies, target_ranks


def one_hot(index: list[int], n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(index), n).bool()


# ---------------------------------------------------------------------------------------------------
# retrieval


def test_perfect_ranking():
    m = retrieval_metrics(torch.eye(5) + 0.1)
    assert (m["R@1"], m["R@5"], m["R@10"], m["MedR"], m["MeanR"]) == (100.0, 100.0, 100.0, 1.0, 1.0)
    assert (m["v2t_R@1"], m["v2t_MedR"], m["tied"], m["chance_R@1"]) == (100.0, 1.0, 0.0, 20.0)


def test_reversed_ranking_puts_every_true_item_last():
    n = 12
    m = retrieval_metrics(-torch.eye(n))                  # the true item scores lowest, the rest tie above
    assert m["R@1"] == m["R@5"] == m["R@10"] == 0.0
    assert m["MedR"] == m["MeanR"] == n and m["v2t_MedR"] == n


def test_exact_ranks_and_even_count_median():
    # query q's true item is q; the number of items strictly above it: 0, 1, 2, 9 -> ranks 1, 2, 3, 10
    sim = torch.zeros(4, 10)
    for q, above in enumerate([0, 1, 2, 9]):
        sim[q, q] = 0.5
        others = [g for g in range(10) if g != q][:above]
        sim[q, others] = 0.9
        sim[q, [g for g in range(10) if g != q and g not in others]] = 0.1
    ranks, tied = target_ranks(sim, one_hot([0, 1, 2, 3], 10))
    assert ranks.tolist() == [1, 2, 3, 10] and not tied.any()
    m = retrieval_metrics(sim, torch.tensor([0, 1, 2, 3]))
    assert m["MedR"] == 2.5                               # (2 + 3) / 2; torch.median would say 2
    assert m["MeanR"] == 4.0
    assert (m["R@1"], m["R@5"], m["R@10"]) == (25.0, 75.0, 100.0)
    assert m["chance_R@1"] == 10.0


def test_median_rank():
    assert median_rank(torch.tensor([3.0, 1.0, 2.0])) == 2.0
    assert median_rank(torch.tensor([4.0, 1.0])) == 2.5
    assert median_rank(torch.tensor([7.0])) == 7.0
    with pytest.raises(ValueError):
        median_rank(torch.tensor([]))


def test_ties_count_for_the_query_and_the_other_rules_on_request():
    sim = torch.tensor([[0.5, 0.5, 0.5, 0.2],            # true item 0 ties with items 1 and 2
                        [0.1, 0.9, 0.3, 0.3]])           # true item 1 alone on top
    targets = one_hot([0, 1], 4)
    assert target_ranks(sim, targets)[0].tolist() == [1, 1]                    # strictly higher + 1
    assert target_ranks(sim, targets, "pessimistic")[0].tolist() == [3, 1]
    assert target_ranks(sim, targets, "average")[0].tolist() == [2, 1]
    assert target_ranks(sim, targets)[1].tolist() == [True, False]
    with pytest.raises(ValueError, match="ties"):
        target_ranks(sim, targets, "random")


def test_a_collapsed_model_shows_as_tied():
    m = retrieval_metrics(torch.ones(6, 6))
    assert m["R@1"] == 100.0 and m["tied"] == 100.0      # optimistic rule: say so beside it
    assert retrieval_metrics(torch.ones(6, 6), ties="average")["MedR"] == 3.5


def test_several_captions_per_video_in_both_directions():
    # 3 videos; captions 0,1 -> video 0, caption 2 -> video 1, captions 3,4 -> video 2
    sim = torch.tensor([[0.9, 0.1, 0.0],     # c0: video 0 first                    -> rank 1
                        [0.2, 0.8, 0.5],     # c1: video 1, then video 2, video 0  -> rank 3
                        [0.1, 0.7, 0.9],     # c2: video 2 above video 1           -> rank 2
                        [0.3, 0.2, 0.6],     # c3: rank 1
                        [0.8, 0.1, 0.4]])    # c4: video 0, then video 2           -> rank 2
    owner = torch.tensor([0, 0, 1, 2, 2])
    m = retrieval_metrics(sim, owner)
    assert m["R@1"] == 40.0 and m["MedR"] == 2.0 and m["MeanR"] == pytest.approx(9 / 5)
    assert m["chance_R@1"] == pytest.approx(100 / 3) and m["queries"] == 5 and m["gallery"] == 3
    # video-to-text, each video's best own caption among the 5:
    #   video 0 column (0.9, 0.2, 0.1, 0.3, 0.8): c0 best, nothing above -> 1
    #   video 1 column (0.1, 0.8, 0.7, 0.2, 0.1): c2 = 0.7, c1 above      -> 2
    #   video 2 column (0.0, 0.5, 0.9, 0.6, 0.4): c3 = 0.6, c2 above      -> 2
    assert m["v2t_R@1"] == pytest.approx(100 / 3) and m["v2t_MedR"] == 2.0
    assert m["v2t_MeanR"] == pytest.approx(5 / 3) and m["v2t_chance_R@1"] == 20.0


def test_video_to_text_differs_from_text_to_video():
    sim = torch.tensor([[0.9, 0.8],           # t2v: both texts find their video first
                        [0.95, 1.0]])         # v2t: video 0 prefers text 1 (0.95 > 0.9)
    m = retrieval_metrics(sim)
    assert m["R@1"] == 100.0 and m["v2t_R@1"] == 50.0 and m["v2t_MedR"] == 1.5


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="query_item"):
        retrieval_metrics(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="indices"):
        retrieval_metrics(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="right item"):
        target_ranks(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool))


def test_gallery_has_one_entry_per_video():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 1.0]])
    gallery, index, ids = metrics.video_gallery(emb, ["b", "a", "b", "c"])
    assert ids == ["b", "a", "c"] and index.tolist() == [0, 1, 0, 2]
    assert torch.allclose(gallery[0], torch.tensor([2.0, 1.0]) / math.sqrt(5))   # mean of b's spans
    assert torch.allclose(gallery.norm(dim=1), torch.ones(3))


def test_overlapping_spans_of_one_video_are_not_negatives():
    # video "a" has two overlapping spans with near-identical frames; span a2's text is closest to a1's
    # frames. Per span, a2 would rank its own span second (a miss at R@1); per video it is a hit.
    video = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.98, 0.2, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    text = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.05, 0.0], [0.0, 0.1, 1.0]]), dim=-1)
    per_span = retrieval_metrics(text @ video.t())
    assert per_span["R@1"] == pytest.approx(200 / 3)
    per_video = metrics.grouped_retrieval(text, video, ["a", "a", "b"])
    assert per_video["R@1"] == 100.0 and per_video["gallery"] == 2 and per_video["chance_R@1"] == 50.0


# ---------------------------------------------------------------------------------------------------
# transcript sorting


def logits_for(guesses: list[list[int]], k: int = 4) -> torch.Tensor:
    """[B, K, K] logits whose argmax for slot i is guesses[b][i]."""
    return torch.nn.functional.one_hot(torch.tensor(guesses), k).float()


def test_sort_accuracy_needs_all_k_positions_right():
    truth = torch.tensor([[2, 0, 3, 1], [0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]])
    guesses = [[2, 0, 3, 1],       # perfect
               [1, 0, 2, 3],       # one swap: 2 of 4 right
               [0, 1, 2, 3],       # the reversed order guessed as the identity: 0 right
               [1, 3, 2, 0]]       # one swap: 2 of 4 right
    sort_acc, pos_acc = sort_accuracies(logits_for(guesses), truth)
    assert sort_acc.item() == pytest.approx(1 / 4)
    assert pos_acc.item() == pytest.approx((4 + 2 + 0 + 2) / 16)


def test_perfect_and_reversed_sorting():
    truth = torch.tensor([[0, 1, 2, 3], [3, 1, 0, 2]])
    assert [x.item() for x in sort_accuracies(logits_for(truth.tolist()), truth)] == [1.0, 1.0]
    reversed_ = (3 - truth).tolist()      # every slot at a wrong position: 3 - p != p for K = 4
    assert [x.item() for x in sort_accuracies(logits_for(reversed_), truth)] == [0.0, 0.0]


def test_a_guess_that_repeats_a_position_is_not_a_permutation():
    logits = logits_for([[0, 1, 2, 3], [0, 0, 2, 3], [3, 3, 3, 3], [2, 3, 1, 0]])
    assert metrics.is_permutation(logits).tolist() == [True, False, False, True]
    # right at 3 of 4 positions, but not an ordering: position 0 twice
    sort_acc, pos_acc = sort_accuracies(logits[1:2], torch.tensor([[0, 1, 2, 3]]))
    assert (sort_acc.item(), pos_acc.item()) == (0.0, 0.75)


def test_losses_report_the_same_accuracies():
    from training.losses import sort_loss_and_accuracy

    truth = torch.tensor([[2, 0, 3, 1], [0, 1, 2, 3]])
    logits = logits_for([[2, 0, 3, 1], [1, 0, 2, 3]]) * 5
    loss, sort_acc, pos_acc = sort_loss_and_accuracy(logits, truth)
    assert (sort_acc.item(), pos_acc.item()) == (0.5, 0.75) and loss.item() > 0
