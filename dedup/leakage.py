"""The leakage job: which pretraining samples show (or come from) a downstream evaluation video?

    python -m dedup leakage --config configs/leakage.yaml [--set search.threshold=0.92 ...]

1. Downstream side (small; dedup/downstream_features.py): each dataset's official annotation files ->
   videos -> N frames each (ffmpeg) -> frame features, cached under output.dir/cache/ keyed by the model
   fingerprint, so a rerun reuses them. Decode failures are counted per error class.
2. FAISS index over all downstream frames (Flat up to a size, HNSW/IVF beyond; dedup/index.py).
3. Corpus side (large), streamed: shards -> samples -> features (stored `clip.npy` when the fingerprint
   matches, else computed from the JPEGs; with corpus.frames_per_sample only N evenly spaced frames of
   each sample, original frame indexes kept) -> top-k search per frame -> per (sample, downstream video)
   pairs (dedup/match.py). In process, or with Ray Data (`ray.enabled`): embedding actors with
   `num_gpus` each, read by the driver in batches. Nothing holds all corpus features.
4. Source ids: the same YouTube id in the corpus (manifest `meta.youtube_id`, or the sample's meta) and
   in a downstream annotation (Kinetics, MSVD, MSR-VTT urls, folder names) is a `source_id` match.
5. Outputs in output.dir (a folder or an fsspec URL; each file atomic, common.storage): report.html (one
   row per (corpus video, downstream video), dedup/rows.py; frames in thumbs/), report.json (ranked flagged
   sample pairs), summary.json, blocklist.txt (from decisions.json, dedup/decisions.py: a rerun keeps the
   decisions a person made in the review page), done.json, and with output.rewrite_shards the corpus
   shards without the blocked samples (clean_shards/).
   Corpus shards may be URLs too (common/shard_io.py); the downstream cache of a URL output.dir is local.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from common import storage
from common.cli import JobError, progress
from common.config import add_config_args, load_from_args
from common.donemark import inputs_fingerprint, is_done, mark_done
from common.ray_env import prepare_ray
from dedup.config import LeakageConfig
from dedup.corpus import expand_shards, iter_samples, manifest_youtube_ids, youtube_id_of
from dedup.downstream_features import DownstreamSet, load_downstream
from dedup.locations import check_locations, output_location, state_dir, write_json


# ---- corpus side --------------------------------------------------------------------------------------------
def _sample_rows(shards: list[str], counts: Counter, max_samples: int) -> Iterator[dict]:
    for sample in iter_samples(shards, counts, max_samples):
        counts["samples_read"] += 1
        yield {"key": sample.key, "video_id": sample.video_id, "shard": sample.shard, "frames": sample.frames,
               "frame_times": sample.frame_times, "youtube_id": youtube_id_of(sample.meta) or "",
               "text": sample.text, "clip": sample.clip, "clip_model": sample.clip_model}


def stream_local(cfg: LeakageConfig, embedder: Any, shards: list[str], counts: Counter) -> Iterator[tuple[dict, np.ndarray | None, str]]:
    """(row, features or None, feature source or error class), in process: samples go to the model in
    groups whose distinct frames fill its batches (dedup.corpus.iter_features)."""
    from dedup.corpus import CorpusSample, iter_features

    pending: collections.deque[dict] = collections.deque()   # the rows of the samples in flight, in order

    def samples() -> Iterator[CorpusSample]:
        for r in _sample_rows(shards, counts, cfg.corpus.max_samples):
            pending.append(r)
            yield CorpusSample(key=r["key"], video_id=r["video_id"], shard=r["shard"], frames=r["frames"],
                               frame_times=r["frame_times"], meta={}, clip=r["clip"], clip_model=r["clip_model"])

    for sample, feats, source in iter_features(samples(), embedder, cfg.corpus.use_stored_features,
                                               cfg.corpus.frames_per_sample, samples_per_batch(cfg)):
        row = pending.popleft()
        row["frame_indices"] = sample.frame_indices
        counts["frames_embedded"] += sample.embedded
        yield row, feats, source


def samples_per_batch(cfg: LeakageConfig) -> int:
    from dedup.corpus import samples_per_batch as per_batch

    return per_batch(cfg.model.batch_size, cfg.corpus.frames_per_sample)


def stream_ray(cfg: LeakageConfig, shards: list[str], counts: Counter) -> Iterator[tuple[dict, np.ndarray | None, str]]:
    """The same stream composed with Ray Data: shard reading tasks -> embedding actors -> the driver."""
    joining = prepare_ray(cfg.ray.address)
    import ray

    from features.embed import embedder_kwargs

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if joining:
            kwargs["address"] = cfg.ray.address or None
        elif cfg.ray.num_cpus:
            kwargs["num_cpus"] = cfg.ray.num_cpus
        ray.init(**kwargs)

    def read_shard(item: dict) -> list[dict]:
        local = Counter()
        rows = []
        for row in _sample_rows([item["shard"]], local, 0):
            clip = row.pop("clip")
            row["clip_npy"] = npy_bytes(clip) if clip is not None else b""
            row["clip_model"] = row["clip_model"] or ""
            rows.append(row)
        return rows

    ds = ray.data.from_items([{"shard": s} for s in shards]).flat_map(read_shard)
    ds = ds.map_batches(RayFeatures, fn_constructor_kwargs={"embedder_kwargs": embedder_kwargs(cfg.model),
                                                             "use_stored": cfg.corpus.use_stored_features,
                                                             "frames_per_sample": cfg.corpus.frames_per_sample},
                        concurrency=cfg.model.concurrency, num_gpus=cfg.model.num_gpus or None,
                        batch_size=samples_per_batch(cfg), batch_format="pandas")
    n = 0
    for batch in ds.iter_batches(batch_size=64, batch_format="pandas"):
        for row in batch.to_dict("records"):
            counts["samples_read"] += 1
            counts["frames_embedded"] += int(row.pop("embedded"))
            feats = from_npy(row.pop("feats_npy")) if row["feats_npy"] else None
            indices = row.pop("frame_indices_npy")
            row["frame_indices"] = from_npy(indices).tolist() if indices else None
            yield row, feats, row["feature_source"] or row["error"]
            n += 1
            if cfg.corpus.max_samples and n >= cfg.corpus.max_samples:
                return


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    import io

    return np.load(io.BytesIO(data), allow_pickle=False)


class RayFeatures:
    """Ray actor around CorpusFeatures: rows carry npy bytes (Arrow-friendly) instead of arrays."""

    def __init__(self, embedder_kwargs: dict, use_stored: bool, frames_per_sample: int = 0):
        from dedup.corpus import CorpusFeatures

        self.stage = CorpusFeatures(embedder_kwargs, use_stored, frames_per_sample)

    def __call__(self, frame):  # pandas DataFrame
        batch = {
            "key": list(frame["key"]), "video_id": list(frame["video_id"]), "frames": list(frame["frames"]),
            "clip": [from_npy(b) if len(b) else None for b in frame["clip_npy"]],
            "clip_model": list(frame["clip_model"]),
        }
        out = self.stage(batch)
        frame = frame.drop(columns=["clip_npy", "frames"])
        frame["feats_npy"] = [npy_bytes(f) if f is not None else b"" for f in out["clip"]]
        frame["error"], frame["feature_source"] = out["error"], out["feature_source"]
        frame["embedded"] = out["embedded"]
        # npy bytes like the features: a list column would be list<null> in a batch where every row failed
        frame["frame_indices_npy"] = [npy_bytes(np.asarray(i, np.int32)) if f is not None else b""
                                      for i, f in zip(out["frame_indices"], out["clip"])]
        return frame


# ---- the job ---------------------------------------------------------------------------------------------------
@dataclass
class LeakageResult:
    pairs: list[dict]
    summary: dict
    out_dir: Path | str  # a Path for a local output.dir, else its URL (never turned into a local path)



def _global_tables(sets: list[DownstreamSet], dim: int):
    """Concatenate the datasets' frames into one index space; global video index = (dataset, video)."""
    from dedup.match import FrameTable

    feats, video, frame, times, owners = [], [], [], [], []
    offset = 0
    for d_idx, ds in enumerate(sets):
        owners.extend((d_idx, v_idx) for v_idx in range(len(ds.videos)))
        if ds.feats is None or not len(ds.feats):
            offset += len(ds.videos)
            continue
        feats.append(ds.feats)
        video.append(ds.frame_video.astype(np.int64) + offset)
        frame.append(ds.frame_index)
        times.append(ds.frame_time)
        offset += len(ds.videos)
    table = FrameTable(video=np.concatenate(video) if video else np.zeros(0, np.int64),
                       frame=np.concatenate(frame) if frame else np.zeros(0, np.int32),
                       time=np.concatenate(times) if times else np.zeros(0, np.float32))
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float16)), table, owners


def run(cfg: LeakageConfig) -> LeakageResult:
    from dedup.index import build_index, search
    from dedup.match import PairStats, aggregate_batch
    from features.embed import FrameEmbedder, embedder_kwargs

    started = time.time()
    out_dir = output_location(cfg.output.dir)
    storage.check_location(cfg.output.dir, "output.dir", writable=True)  # local: mkdir; URL: the bucket
    shards = expand_shards(cfg.corpus.shards)
    if not shards:
        raise JobError(f"corpus.shards={storage.redact(cfg.corpus.shards)!r} matches no shard files: run the pipeline first "
                       "(python -m pipeline run) or fix the pattern")
    if not cfg.downstream:
        raise JobError("no downstream datasets configured (config key 'downstream'): nothing to check against")
    manifest_ids = manifest_youtube_ids(cfg.corpus.manifest)

    embedder = FrameEmbedder(**embedder_kwargs(cfg.model))
    print(f"features: {embedder.backend} {embedder.fingerprint} on {embedder.device} ({embedder.precision})"
          + ("  [RANDOM-INIT weights]" if cfg.model.random_init else ""))
    # The cache is read back whole on every run: local (output.dir/cache/, or a state folder for a URL).
    sets = [load_downstream(spec, embedder, state_dir(cfg.output.dir) / "cache") for spec in cfg.downstream]
    for ds in sets:
        if ds.error:
            print(f"error: downstream dataset {ds.spec.name!r} skipped: {ds.error}")
    if all(ds.error for ds in sets):
        raise JobError("no downstream dataset could be read (see the errors above)")
    feats, table, owners = _global_tables(sets, embedder.dim)
    built = build_index(feats, cfg.search.index, cfg.search.flat_max, cfg.search.ivf_nlist, cfg.search.ivf_nprobe,
                        cfg.search.hnsw_m, cfg.search.hnsw_ef_search, cfg.search.use_gpu, cfg.seed)
    print(f"index: {built.kind}{' (GPU)' if built.on_gpu else ''} over {built.size} downstream frames "
          f"of {sum(ds.checked for ds in sets)} videos")

    # Source ids: downstream YouTube id -> global video indexes.
    yt_downstream: dict[str, list[int]] = defaultdict(list)
    for g, (d_idx, v_idx) in enumerate(owners):
        ytid = sets[d_idx].videos[v_idx].youtube_id
        if ytid:
            yt_downstream[ytid].append(g)
    corpus_videos: dict[str, dict] = {}  # video_id -> {youtube_id, first_key, samples}

    stats = PairStats(threshold=cfg.search.threshold, min_matching_frames=cfg.search.min_matching_frames,
                      near_miss_cap=max(200, cfg.output.top_pairs))
    counts: Counter = Counter()
    stream = stream_ray(cfg, shards, counts) if cfg.ray.enabled else stream_local(cfg, embedder, shards, counts)
    batch_rows: list[dict] = []
    batch_feats: list[np.ndarray] = []

    def flush() -> None:
        if not batch_rows:
            return
        queries = np.concatenate(batch_feats).astype(np.float32)
        sims, ids = search(built, queries, cfg.search.k, cfg.search.query_batch)
        aggregate_batch(stats, batch_rows, [len(f) for f in batch_feats], sims, ids, table)
        batch_rows.clear()
        batch_feats.clear()

    frames_per_batch = max(cfg.search.query_batch, 1)
    queued = 0
    with progress(desc="corpus", unit="sample") as bar:
        for row, sample_feats, source in stream:
            bar.update(1)
            video = corpus_videos.setdefault(row["video_id"], {"youtube_id": None, "first_key": row["key"],
                                                              "first_shard": row["shard"], "samples": 0})
            video["samples"] += 1
            video["youtube_id"] = video["youtube_id"] or row.get("youtube_id") or None
            if sample_feats is None:
                counts[f"failed:{source}"] += 1
                continue
            counts[f"features:{source}"] += 1
            if built.size == 0:
                continue
            batch_rows.append({k: row.get(k) for k in ("key", "video_id", "shard", "frame_times", "frame_indices")})
            batch_feats.append(np.asarray(sample_feats))
            queued += len(sample_feats)
            counts["frames_searched"] += len(sample_feats)
            if queued >= frames_per_batch:
                flush()
                queued = 0
        flush()
    if cfg.ray.enabled:
        import ray

        ray.shutdown()
    for video_id, ytid in manifest_ids.items():
        entry = corpus_videos.setdefault(video_id, {"youtube_id": None, "first_key": None, "samples": 0})
        entry["youtube_id"] = entry["youtube_id"] or ytid

    pairs = _rank_pairs(stats.flagged, corpus_videos, yt_downstream, sets, owners)
    near = [_describe(p, sets, owners) for p in stats.near_misses()]
    for p in near:
        p["kind"], p["kinds"] = "none", []
    if cfg.text.enabled:
        from dedup.text import text_matches

        text_pairs = text_matches(cfg, shards, sets, counts)
        pairs = _merge_text(pairs, text_pairs)
    for rank, pair in enumerate(pairs, start=1):
        pair["rank"] = rank
    summary = _summary(cfg, embedder, built, sets, counts, stats, pairs, corpus_videos, time.time() - started)
    summary["near_misses"] = near
    write_outputs(cfg, out_dir, pairs, summary, shards, {v for v, info in corpus_videos.items() if info["samples"]})
    return LeakageResult(pairs=pairs, summary=summary, out_dir=out_dir)


def _describe(pair: dict, sets: list[DownstreamSet], owners: list[tuple[int, int]]) -> dict:
    d_idx, v_idx = owners[pair.pop("downstream_global")]
    video = sets[d_idx].videos[v_idx]
    out = {"corpus_key": pair["corpus_key"], "downstream_dataset": video.dataset,
           "downstream_video_id": video.video_id}
    out.update(pair)
    out.update({"downstream_split": video.split, "downstream_path": video.path, "downstream_youtube_id": video.youtube_id,
                "downstream_label": video.label})
    return out


def _rank_pairs(flagged: list[dict], corpus_videos: dict[str, dict], yt_downstream: dict[str, list[int]],
                sets: list[DownstreamSet], owners: list[tuple[int, int]]) -> list[dict]:
    """Visual pairs plus source-id pairs, merged per (corpus video, downstream video), ranked."""
    visual_best: dict[tuple[str, int], dict] = {}
    for pair in flagged:
        key = (pair["corpus_video_id"], pair["downstream_global"])
        if key not in visual_best or pair["similarity"] > visual_best[key]["similarity"]:
            visual_best[key] = pair
    out = []
    for pair in flagged:
        pair["kind"], pair["kinds"] = "visual", ["visual"]
    source_keys = set()
    for video_id, info in sorted(corpus_videos.items()):
        ytid = info.get("youtube_id")
        for g in yt_downstream.get(ytid or "", []):
            source_keys.add((video_id, g))
            best = visual_best.get((video_id, g))
            if best is not None:
                best["kind"], best["kinds"] = "source_id", ["source_id", "visual"]
                best["youtube_id"] = ytid
                continue
            out.append({"corpus_key": info.get("first_key") or video_id, "corpus_video_id": video_id,
                        "corpus_shard": info.get("first_shard") or "", "corpus_frame_index": 0, "downstream_global": g, "similarity": None, "matching_frames": 0,
                        "kind": "source_id", "kinds": ["source_id"], "youtube_id": ytid})
    out.extend(flagged)
    described = [_describe(dict(p), sets, owners) for p in out]
    # Source-id matches are certain, then visual evidence by similarity, then matching frames.
    described.sort(key=lambda p: (p["kind"] != "source_id", -(p["similarity"] if p["similarity"] is not None else 2.0),
                                  -p["matching_frames"], p["corpus_key"], p["downstream_video_id"]))
    return described


def _merge_text(pairs: list[dict], text_pairs: list[dict]) -> list[dict]:
    index = {(p["corpus_key"], p["downstream_dataset"], p["downstream_video_id"]): p for p in pairs}
    for tp in text_pairs:
        key = (tp["corpus_key"], tp["downstream_dataset"], tp["downstream_video_id"])
        if key in index:
            index[key]["kinds"].append("text")
            index[key]["text_similarity"] = tp["text_similarity"]
        else:
            pairs.append(tp)
    return pairs


def _summary(cfg: LeakageConfig, embedder: Any, built: Any, sets: list[DownstreamSet], counts: Counter,
             stats: Any, pairs: list[dict], corpus_videos: dict, seconds: float) -> dict:
    from dedup.match import HIST_BINS, sweep_counts

    per_dataset = {}
    for ds in sets:
        flagged = [p for p in pairs if p["downstream_dataset"] == ds.spec.name]
        per_dataset[ds.spec.name] = {
            "format": ds.spec.format, "error": ds.error, "videos_listed": len(ds.videos),
            "videos_with_file": ds.with_file, "videos_checked": ds.checked,
            "frames_indexed": 0 if ds.feats is None else int(len(ds.feats)),
            "with_youtube_id": sum(1 for v in ds.videos if v.youtube_id),
            "bad_rows": ds.bad_rows, "row_errors": ds.row_errors, "decode_failures": dict(ds.failures),
            "failure_examples": ds.failure_examples, "features_cached": ds.cached,
            "pairs_flagged": len(flagged), "by_kind": dict(Counter(p["kind"] for p in flagged)),
            "downstream_videos_flagged": len({p["downstream_video_id"] for p in flagged}),
        }
    sweep = sorted(set(cfg.search.sweep) | {cfg.search.threshold})
    out = {
        "random_init": cfg.model.random_init, "model": embedder.fingerprint, "device": embedder.device,
        "threshold": cfg.search.threshold, "min_matching_frames": cfg.search.min_matching_frames, "k": cfg.search.k,
        "index": {"kind": built.kind, "on_gpu": built.on_gpu, "frames": built.size},
        "corpus": {"shards_pattern": storage.redact(cfg.corpus.shards), "samples_read": counts["samples_read"],
                   "frames_per_sample": cfg.corpus.frames_per_sample, "frames_searched": counts["frames_searched"],
                   "frames_embedded": counts["frames_embedded"],   # distinct frames through the model
                   "videos": len([v for v in corpus_videos.values() if v["samples"]]),
                   "videos_with_youtube_id": sum(1 for v in corpus_videos.values() if v.get("youtube_id")),
                   "features": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("features:")},
                   "failures": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("failed:")},
                   "bad_shards": counts["bad_shard"]},
        "datasets": per_dataset,
        "pairs_flagged": len(pairs), "by_kind": dict(Counter(p["kind"] for p in pairs)),
        "blocked": 0,
        "histogram": {"bin_edges": [round(float(x), 4) for x in HIST_BINS], "pairs": stats.hist.tolist(),
                      "best_per_sample": stats.best_per_sample.tolist()},
        "sweep": {"thresholds": sweep, "pairs": sweep_counts(stats.hist, sweep)},
        "seconds": round(seconds, 2),
    }
    from dedup.decisions import report_id, report_identity

    out["report_id"] = report_id(report_identity(out))  # what decisions.json belongs to (dedup/decisions.py)
    return out


def write_outputs(cfg: LeakageConfig, out_dir: Path | str, pairs: list[dict], summary: dict, shards: list[str],
                  corpus_video_ids: set[str]) -> None:
    """blocklist.txt (from decisions.json and the threshold), report.json, thumbs/, report.html, summary.json
    into output.dir (a folder or a URL). A rerun keeps the decisions of the pairs it flags again."""
    from dedup import decisions as dec
    from dedup.blocklist import rewrite_shards
    from dedup.report import write_report
    from dedup.rows import video_rows
    from dedup.thumbs import write_thumbnails

    rows = video_rows(pairs)
    decided = dec.load(out_dir, summary["report_id"], dec.report_identity(summary))
    for note in decided.notes:
        print(f"note: {note}")
    # Decided pairs whose corpus video this run did not read at all: a shard deleted (or unreadable) since.
    summary["decided_corpus_videos_missing"] = gone = sorted({k[0] for k in decided.entries} - corpus_video_ids)
    if gone:
        print(f"note: {len(gone)} corpus videos with decisions were not in this run's shards (a shard deleted or "
              f"unreadable since?): {', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}; their decisions are kept "
              "in decisions.json")
    summary["decision_notes"] = list(decided.notes)
    decided.notes = []  # said once: report.html keeps them through summary.json
    entries, counts = dec.write(out_dir, summary, rows, decided, cfg.output.blocklist_unit,
                                cfg.output.blocklist_undecided)
    summary["blocked"] = counts["entries"]
    summary["video_pairs_flagged"] = len(rows)
    summary["blocklist"] = {"unit": cfg.output.blocklist_unit, "block_undecided": cfg.output.blocklist_undecided, **counts}
    write_json(storage.join(out_dir, "report.json"), pairs)
    if cfg.output.rewrite_shards:
        summary["rewrite"] = rewrite_shards(shards, set(entries), storage.join(out_dir, "clean_shards"))
    strip_rows = cfg.output.strip_rows or len(rows)
    summary["strip_rows"] = strip_rows
    near_rows = video_rows(summary.get("near_misses", []))[:10]
    summary["thumbnails"] = write_thumbnails(out_dir, rows[:strip_rows] + near_rows,
                                             {spec.name: spec.frames for spec in cfg.downstream})
    for note in summary["thumbnails"]["notes"]:
        print(f"note: {note}")
    write_report(out_dir, pairs, summary, decided)
    write_json(storage.join(out_dir, "summary.json"), summary)


def print_summary(result: LeakageResult) -> None:
    s = result.summary
    print()
    if s["random_init"]:
        print("NOTE: features come from RANDOM-INIT weights (model.random_init=true): only near-exact copies are meaningful")
    print(f"{'dataset':<14} {'listed':>7} {'w/ file':>7} {'checked':>7} {'failed':>7} {'flagged':>7}  kinds")
    for name, d in s["datasets"].items():
        failed = sum(v for k, v in d["decode_failures"].items() if k != "no_video_file")
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(d["by_kind"].items())) or ("ERROR: " + d["error"] if d["error"] else "-")
        print(f"{name:<14} {d['videos_listed']:>7} {d['videos_with_file']:>7} {d['videos_checked']:>7} {failed:>7} "
              f"{d['pairs_flagged']:>7}  {kinds}")
    c = s["corpus"]
    print(f"corpus: {c['samples_read']} samples of {c['videos']} videos; features {c['features']}; failures {c['failures'] or 0}")
    b = s["blocklist"]
    print(f"flagged: {s['video_pairs_flagged']} video pairs ({s['pairs_flagged']} sample pairs {s['by_kind']}); decisions: "
          f"{b['leak']} leak, {b['not_leak']} not a leak, {b['unsure']} unsure, {b['undecided']} undecided; "
          f"blocklist entries: {s['blocked']}; {s['seconds']:.1f}s")
    print(f"report: {storage.redact(storage.join(result.out_dir, 'report.html'))} (review it: python -m dedup review "
          f"--report {storage.redact(str(result.out_dir))})")


def job_fingerprint(cfg: LeakageConfig) -> str:
    """done.json fingerprint: the whole config (so every key, corpus.frames_per_sample included) and the
    shard, annotation and manifest files. Finished before with the same one: nothing to redo."""
    inputs = [*expand_shards(cfg.corpus.shards), *(a for spec in cfg.downstream for a in spec.annotations)]
    if cfg.corpus.manifest:
        inputs.append(cfg.corpus.manifest)
    return inputs_fingerprint(cfg, inputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup leakage", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--force", action="store_true",
                        help="run even when the inputs and config are unchanged since the last finished run")
    args = parser.parse_args(argv)
    cfg = load_from_args(LeakageConfig, args, job="leakage")
    try:
        check_locations(cfg.output.dir, cfg.corpus.shards, cfg.corpus.manifest)
        fingerprint = job_fingerprint(cfg)
        outputs = ("report.html", "report.json", "blocklist.txt")
        if not args.force and is_done(cfg.output.dir, fingerprint, outputs):
            print("leakage check up to date (inputs unchanged; --force to redo): "
                  f"{storage.redact(storage.join(cfg.output.dir, 'report.html'))}")
            return 0
        result = run(cfg)
        print_summary(result)
        mark_done(cfg.output.dir, fingerprint)
    except storage.StorageError as exc:  # a location that cannot be used: like a bad config key
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    return 0
