"""Evaluation metrics on plain tensors: retrieval (R@K, median and mean rank, both directions) and
transcript sorting (all-K accuracy, position accuracy, permutation rate). No model and no data here:
evaluate.py, the held-out pass of engine.py and losses.py feed them; tests/training/test_metrics.py
checks them on hand-made matrices.

Retrieval protocol (MSR-VTT, MSVD, DiDeMo, LSMDC as CLIP4Clip and Frozen in Time report them):
- sim [Q, G]: query q's score for gallery item g; `query_item[q]` is q's true item. A gallery item may
  have several queries (MSR-VTT's 20 captions per video; here a video's several spans).
- rank: 1 + the number of gallery items with a STRICTLY higher score than the true item's, so ties with
  the true item count in the query's favour (CLIP4Clip's compute_metrics; "optimistic"). The other rules
  are here too: "pessimistic" (every tied item ranks above) and "average" (the mean of the tied positions,
  collaborative-experts' and Frozen in Time's default). Embeddings in float rarely tie, except when a model
  has collapsed: `tied` (% of queries whose true item shares its score with another item) shows that,
  since the optimistic rule would rank every query of a constant model first.
- R@K: % of queries with rank <= K. MedR: the median rank, the mean of the two middle ranks for an even
  count (numpy's median; torch.median would take the lower one). MeanR: the mean rank.
- Video-to-text: each gallery item queries the texts; its rank is that of its best-ranked own text
  (several captions per video: a hit when any of them is in the top K).

SVO-Probes (`svo_metrics`): per probe the cosines of its sentence with its positive and its negative
image; the thresholded scores per rho and the pairwise accuracy, per negative type and overall.
"""
from __future__ import annotations

import torch

TIES = ("optimistic", "pessimistic", "average")


def target_ranks(sim: torch.Tensor, targets: torch.Tensor, ties: str = "optimistic"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """sim [Q, G], targets [Q, G] bool (each row's right items, at least one) -> (ranks [Q] float, 1-based,
    of each row's best-scoring right item; tied [Q] bool: a wrong item has exactly that score)."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if sim.shape != targets.shape or sim.dim() != 2:
        raise ValueError(f"sim and targets must be the same [Q, G] shape, got {tuple(sim.shape)} and {tuple(targets.shape)}")
    if not targets.any(dim=1).all():
        raise ValueError("every query needs at least one right item")
    sim = sim.float()
    best = sim.masked_fill(~targets, float("-inf")).max(dim=1, keepdim=True).values      # [Q, 1]
    higher = (sim > best).sum(dim=1).float()              # right items never beat the best right one
    tied_wrong = ((sim == best) & ~targets).sum(dim=1).float()
    ranks = higher + 1
    if ties == "pessimistic":
        ranks = ranks + tied_wrong
    elif ties == "average":
        ranks = ranks + tied_wrong / 2
    return ranks, tied_wrong > 0


def median_rank(ranks: torch.Tensor) -> float:
    """The median of the ranks; an even count averages the two middle values."""
    if ranks.numel() == 0:
        raise ValueError("no ranks")
    ordered = ranks.float().flatten().sort().values
    n = ordered.numel()
    return float((ordered[(n - 1) // 2] + ordered[n // 2]).item() / 2)


def rank_summary(ranks: torch.Tensor, tied: torch.Tensor, gallery: int, ks=(1, 5, 10),
                 prefix: str = "") -> dict[str, float]:
    """R@K (%), MedR, MeanR, chance R@1 (%: one right item in `gallery`) and tied (%) of 1-based ranks."""
    n = ranks.numel()
    out = {f"{prefix}R@{k}": 100.0 * int((ranks <= k).sum()) / n for k in ks}      # exact: counts, not fp32
    out[f"{prefix}MedR"] = median_rank(ranks)
    out[f"{prefix}MeanR"] = float(ranks.double().mean().item())
    out[f"{prefix}chance_R@1"] = 100.0 / gallery
    out[f"{prefix}tied"] = 100.0 * int(tied.sum()) / n
    return out


def retrieval_metrics(sim: torch.Tensor, query_item: torch.Tensor | None = None, ties: str = "optimistic",
                      ks=(1, 5, 10)) -> dict[str, float]:
    """Text-to-video (no prefix) and video-to-text (`v2t_`) metrics of sim [Q texts, G videos].

    query_item [Q]: the true video of each text (None: text i belongs to video i, Q == G). A video's
    rank in the video-to-text direction is that of its best-ranked own text."""
    q, g = sim.shape
    if query_item is None:
        if q != g:
            raise ValueError(f"sim is {q} x {g}: give query_item, the true gallery index of each query")
        query_item = torch.arange(q)
    query_item = query_item.to(sim.device).long()
    if query_item.shape != (q,) or query_item.min() < 0 or query_item.max() >= g:
        raise ValueError(f"query_item must hold {q} indices in [0, {g})")
    targets = torch.zeros(q, g, dtype=torch.bool, device=sim.device)
    targets[torch.arange(q, device=sim.device), query_item] = True
    out = rank_summary(*target_ranks(sim, targets, ties), gallery=g, ks=ks)
    has_text = targets.any(dim=0)                           # a video without a text cannot query in v2t
    v2t = target_ranks(sim.t()[has_text], targets.t()[has_text], ties)
    out.update(rank_summary(*v2t, gallery=q, ks=ks, prefix="v2t_"))
    out["queries"], out["gallery"] = float(q), float(g)
    return out


def video_gallery(video_emb: torch.Tensor, video_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Per-span embeddings [N, D] -> one gallery entry per video: the L2-normalised mean of its spans'
    embeddings [V, D], the video index of each span [N] and the video ids in gallery order (first seen).

    Spans of one video overlap and show the same scenes: kept as separate gallery items, a query's hit on
    a sibling span would count as a miss. One entry per video is the protocol's gallery (one clip per
    video, many captions per clip)."""
    if len(video_ids) != video_emb.shape[0]:
        raise ValueError(f"{len(video_ids)} video ids for {video_emb.shape[0]} embeddings")
    order: dict[str, int] = {}
    index = torch.tensor([order.setdefault(v, len(order)) for v in video_ids], dtype=torch.long)
    sums = torch.zeros(len(order), video_emb.shape[1], dtype=torch.float32, device=video_emb.device)
    sums.index_add_(0, index.to(video_emb.device), video_emb.float())
    gallery = torch.nn.functional.normalize(sums, dim=-1)
    return gallery, index, list(order)


def grouped_retrieval(text_emb: torch.Tensor, video_emb: torch.Tensor, video_ids: list[str],
                      ties: str = "optimistic") -> dict[str, float]:
    """Held-out retrieval: each span's text queries a gallery of one entry per video (video_gallery)."""
    gallery, index, _ = video_gallery(video_emb, video_ids)
    return retrieval_metrics(text_emb.float() @ gallery.t(), index, ties)


# ---------------------------------------------------------------------------------------------------
# transcript sorting


def sort_accuracies(logits: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, K, K] (slot i's score for each position), positions [B, K] (slot i's true position) ->
    (sort accuracy: fraction of samples with all K transcripts at their argmax position right, chance
    (1/K)^K; position accuracy: fraction of the B*K transcripts put right, chance 1/K)."""
    right = logits.argmax(dim=-1) == positions                  # [B, K]
    return right.all(dim=1).float().mean(), right.float().mean()


def is_permutation(logits: torch.Tensor) -> torch.Tensor:
    """[B, K, K] -> [B] bool: the K argmax positions are all different (a guess that is an ordering;
    such a guesser is right by chance 1/K!, not (1/K)^K)."""
    guess = logits.argmax(dim=-1).sort(dim=-1).values          # [B, K]
    return (guess.diff(dim=-1) != 0).all(dim=-1)


# ---------------------------------------------------------------------------------------------------
# classification: video-to-video retrieval by class, top-k accuracy


def class_retrieval(sim: torch.Tensor, query_labels: torch.Tensor, gallery_labels: torch.Tensor,
                    ks=(1, 5, 10), exclude: torch.Tensor | None = None) -> dict[str, float]:
    """Zero-shot video-to-video retrieval (SSV2 protocol): sim [Q, G] cosine scores; a query is a hit at K
    when one of its K nearest gallery videos shares its class. `exclude` [Q, G] bool drops pairs (the query
    itself when the gallery is the query set). Returns R@K (%) and chance_R@K (%): the expected hit rate of
    a random ranking, 1 - C(G-m, K) / C(G, K) for a query with m same-class videos among G, averaged."""
    q, g = sim.shape
    if query_labels.shape != (q,) or gallery_labels.shape != (g,):
        raise ValueError(f"labels must be [{q}] and [{g}], got {tuple(query_labels.shape)} and {tuple(gallery_labels.shape)}")
    sim = sim.float().clone()
    same = query_labels[:, None] == gallery_labels[None, :]                     # [Q, G]
    size = torch.full((q,), float(g))
    if exclude is not None:
        sim[exclude] = float("-inf")
        same = same & ~exclude
        size = size - exclude.sum(dim=1).float()
    order = sim.argsort(dim=1, descending=True)                                 # ties: index order
    hit = same.gather(1, order)                                                 # [Q, G] bool, ranked
    out = {}
    m = same.sum(dim=1).double()
    for k in ks:
        kk = min(k, g)
        out[f"R@{k}"] = 100.0 * float(hit[:, :kk].any(dim=1).float().mean())
        # P(no same-class item among K random draws without replacement) = prod_{i<K} (G-m-i) / (G-i)
        miss = torch.ones(q, dtype=torch.float64)
        for i in range(kk):
            miss = miss * ((size.double() - m - i).clamp(min=0) / (size.double() - i).clamp(min=1))
        out[f"chance_R@{k}"] = 100.0 * float((1 - miss).mean())
    out["queries"], out["gallery"] = float(q), float(g)
    out["queries_without_match"] = float((m == 0).sum())
    return out


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """scores [N, C], labels [N] -> top-K accuracy (%) for each K (K above C counts every sample right)."""
    if scores.dim() != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"scores must be [N, C] and labels [N], got {tuple(scores.shape)} and {tuple(labels.shape)}")
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices                # [N, k]
    right = top == labels[:, None]
    return {f"top{k}": 100.0 * float(right[:, :k].any(dim=1).float().mean()) for k in ks}


SVO_DEFINITIONS = {
    "positive": "an image is predicted positive for a sentence when cos(text, image) > rho (strictly)",
    "precision@rho": "100 * TP / (TP + FP); TP = probes whose positive image has cos > rho, FP = probes whose "
                     "negative image has cos > rho; null when no image is above rho (nothing predicted positive)",
    "recall@rho": "100 * TP / probes (positive images above rho)",
    "accuracy@rho": "100 * (TP + TN) / (2 * probes): both images of a probe judged, TN = negative images <= rho",
    "pairwise_acc": "100 * probes with cos(pos) > cos(neg) (a tie counts as wrong); does not depend on rho",
    "chance": "one positive and one negative image per probe: a score blind to the sentence passes either "
              "image alike, so precision 50% and pairwise accuracy 50%",
}


def _rho_key(rho: float) -> str:
    return f"{rho:g}"


def svo_metrics(cos_pos: torch.Tensor, cos_neg: torch.Tensor, types: list[str], rhos=(0.2, 0.25, 0.3),
                type_names=("subject", "verb", "object")) -> dict:
    """cos_pos, cos_neg [N] (probe i's sentence with its positive / negative image), types[i] the negative's
    type -> flat metrics, for each of the types and "all" (no suffix): `probes[_T]`, `pairwise_acc[_T]`,
    `precision@R[_T]` (None when TP + FP = 0), `recall@R[_T]`, `accuracy@R[_T]`, `tp@R[_T]`, `fp@R[_T]`,
    `cos_pos_mean[_T]`, `cos_neg_mean[_T]` (SVO_DEFINITIONS says each)."""
    cos_pos, cos_neg = cos_pos.double().flatten(), cos_neg.double().flatten()
    if cos_pos.shape != cos_neg.shape or len(types) != cos_pos.numel():
        raise ValueError(f"cos_pos, cos_neg and types must have one entry per probe, got {cos_pos.numel()}, "
                         f"{cos_neg.numel()}, {len(types)}")
    unknown = sorted(set(types) - set(type_names))
    if unknown:
        raise ValueError(f"probe types {unknown} are not among {list(type_names)}")
    out: dict = {}
    for name in ("all", *type_names):
        sel = torch.tensor([name == "all" or t == name for t in types], dtype=torch.bool)
        suffix = "" if name == "all" else f"_{name}"
        pos, neg, n = cos_pos[sel], cos_neg[sel], int(sel.sum())
        out[f"probes{suffix}"] = n
        out[f"pairwise_acc{suffix}"] = 100.0 * float((pos > neg).sum()) / n if n else None
        out[f"cos_pos_mean{suffix}"] = float(pos.mean()) if n else None
        out[f"cos_neg_mean{suffix}"] = float(neg.mean()) if n else None
        for rho in rhos:
            r = _rho_key(rho)
            tp, fp = int((pos > rho).sum()), int((neg > rho).sum())
            tn = n - fp
            out[f"tp@{r}{suffix}"], out[f"fp@{r}{suffix}"] = tp, fp
            out[f"precision@{r}{suffix}"] = 100.0 * tp / (tp + fp) if tp + fp else None
            out[f"recall@{r}{suffix}"] = 100.0 * tp / n if n else None
            out[f"accuracy@{r}{suffix}"] = 100.0 * (tp + tn) / (2 * n) if n else None
    out["chance_pairwise_acc"] = 50.0
    out["chance_precision"] = 50.0
    return out
