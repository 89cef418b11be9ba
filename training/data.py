"""WebDataset shard loader for TVTS samples (ARCHITECTURE.md "Sample in a shard", TVTS-SPEC.md "Sample");
one sample's frames and texts are decoded by training/sample_decode.py.

Per rank, one `ShardDataset` (an IterableDataset run in `data.num_workers` DataLoader workers) and one
`ShardLoader` around it, which merges the workers' batches in a fixed order and can say exactly where it
is, so that a resumed run sees the same batches as an uninterrupted one:

    shard list (this epoch's order, seeded) -> split by node and worker (data.split_by: by shard when
    there are enough shards, else by sample) -> tar (a local file or an fsspec URL such as s3://...,
    opened through fsspec: common/shard_io.py) -> samples (webdataset, broken tar = counted skip)
    -> blocklist and hold-out filter -> shuffle buffer (seeded per epoch/rank/worker) -> position
    counter (resume skips here, before any JPEG is decoded) -> decode: frames, crop, normalise (broken
    sample = counted skip) -> batch: tokenize all B*K transcripts together

Randomness is a function of (seed, epoch, rank, worker, position), never of time or process ids.
"""
from __future__ import annotations

import atexit
import collections
import hashlib
import json
import random
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from common.storage import is_local, local_path, redact
from training.config import DataConfig
from training.sample_decode import FrameSpec, decode_frames, sample_texts

# Consecutive shards without one usable sample before a resampled worker gives up instead of spinning.
MAX_EMPTY_SHARD_DRAWS = 200


class DataError(RuntimeError):
    """Input data problem a user can fix; the message is one line."""


# ---------------------------------------------------------------------------------------------------
# shard lists, blocklist, hold-out


def expand_shards(spec: str) -> list[str]:
    """'a/shard-*.tar::s3://b/shard-{000000..000009}.tar' -> list of shard paths/URLs (sorted per entry).

    Each entry may be a file, a folder (its *.tar), a glob or a brace pattern, local or an fsspec URL
    (s3://, gs://, ...: listed through fsspec, one listing per folder; common/shard_io.py). A shard whose
    pipeline stats file is missing while others have one is still being written and is left out. A bad
    protocol, a missing filesystem package or bucket is a one-line DataError naming data.shards.
    """
    import braceexpand

    from common.shard_io import StorageError, find_shards, has_wildcard

    items = [item for part in spec.split("::") if part.strip() for item in braceexpand.braceexpand(part.strip())]
    try:
        urls, empty = find_shards(items, "data.shards")
    except StorageError as exc:
        raise DataError(str(exc)) from None
    named = [item for item in empty if not has_wildcard(item) and not (is_local(item) and local_path(item).is_dir())]
    if named:  # a file named outright (not a pattern, not a folder) that is not there
        what = "does not exist" if is_local(named[0]) else "does not exist (no such object, or a prefix without .tar)"
        raise DataError(f"data.shards: {redact(named[0])} {what} (check the path, or run the pipeline job first)")
    if not urls:
        raise DataError(f"data.shards '{redact(spec)}' matches no .tar shards (run the pipeline job first, or fix the pattern)")
    return urls


def load_blocklist(paths: list[str]) -> frozenset[str]:
    """Union of blocklist files (local or URLs): one sample key or video id per line, '#' starts a comment."""
    from common import storage

    blocked: set[str] = set()
    for path in paths:
        try:
            text = storage.read_bytes(path).decode("utf-8", errors="replace")
        except FileNotFoundError:
            raise DataError(f"data.blocklist: {redact(path)} does not exist (run the leakage job, or drop the entry)") from None
        except storage.StorageError as exc:
            raise DataError(f"data.blocklist: {exc}") from None
        except OSError as exc:
            raise DataError(f"data.blocklist: {redact(path)} cannot be read ({type(exc).__name__}: {exc})") from None
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry:
                blocked.add(entry)
    return frozenset(blocked)


def holdout_value(video_id: str) -> float:
    """A fixed number in [0, 1) per video: videos below `holdout_fraction` are evaluation-only."""
    digest = hashlib.sha1(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


# ---------------------------------------------------------------------------------------------------
# the dataset run inside each DataLoader worker


class SkipCounter:
    """A webdataset `handler=`: count the exception by class and keep going."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, exn: BaseException) -> bool:
        self.counts[type(exn).__name__] += 1
        return True


@dataclass
class LoaderSettings:
    """What one rank's loader needs besides DataConfig: model geometry, batch, split, place in the job."""
    batch_size: int
    frames: int
    image_size: int
    num_transcripts: int
    split: str = "train"                          # train | eval
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    post_frames: list[int] = field(default_factory=list)  # post mode: frame counts of alternating batches
    max_text_length: int = 50                     # tokens per transcript


class ShardDataset(torch.utils.data.IterableDataset):
    """Yields ready batches (dicts of tensors) tagged with the worker and its stream position."""

    def __init__(self, cfg: DataConfig, settings: LoaderSettings, tokenizer: Any) -> None:
        super().__init__()
        self.cfg, self.s, self.tokenizer = cfg, settings, tokenizer
        self.train = settings.split == "train"
        spec = cfg.eval_shards if (not self.train and cfg.eval_shards) else cfg.shards
        self.urls = expand_shards(spec)
        self.blocklist = load_blocklist(cfg.blocklist)
        # Hold-out: train drops held-out videos, eval keeps only them (unless eval_shards is its own set).
        self.holdout = "none" if cfg.holdout_fraction <= 0 or (not self.train and cfg.eval_shards) else (
            "drop" if self.train else "keep")
        # Set by ShardLoader before each epoch's DataLoader starts (copied into the workers).
        self.epoch = 0
        self.num_logical_workers = 1
        self.rotation = 0
        self.start_positions: dict[int, int] = {}
        self.ended: set[int] = set()

    # -- stream pieces --------------------------------------------------------------------------
    def _worker(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        n = info.num_workers if info else 1
        physical = info.id if info else 0
        return (physical + self.rotation) % n, n

    def _shards_for(self, worker: int, n_workers: int) -> tuple[list[str], int, int]:
        """This epoch's shards for (rank, worker), plus the sample-level modulo split when shards are few."""
        urls = list(self.urls)
        if self.train:
            random.Random(f"{self.s.seed}-shards-{self.epoch}").shuffle(urls)  # same order on every rank
        slots, slot = self.s.world_size * n_workers, self.s.rank * n_workers + worker
        by_shard = self.cfg.split_by == "shard" or (self.cfg.split_by == "auto" and len(urls) >= 4 * slots)
        if by_shard or slots == 1:
            return urls[slot::slots], 1, 0
        return urls, slots, slot  # too few shards: every slot reads all, keeps sample i where i % slots == slot

    def _raw(self, urls: list[str], counter: SkipCounter) -> Iterator[dict]:
        from common.shard_io import tar_samples  # local files and fsspec URLs alike (s3://...)

        return tar_samples(urls, handler=counter)

    def _keep(self, sample: dict, counter: SkipCounter) -> bool:
        try:
            meta = json.loads(sample["json"])
            sample["__meta__"] = meta
            video_id = str(meta.get("video_id", sample["__key__"]))
        except Exception as exn:  # noqa: BLE001 - a broken json is a counted skip
            counter(exn)
            return False
        if sample["__key__"] in self.blocklist or meta.get("key") in self.blocklist or video_id in self.blocklist:
            counter.counts["blocklisted"] += 1
            return False
        if self.holdout != "none":
            held_out = holdout_value(video_id) < self.cfg.holdout_fraction
            if held_out != (self.holdout == "keep"):
                return False
        return True

    def _filtered(self, worker: int, n_workers: int, counter: SkipCounter) -> Iterator[dict]:
        if self.cfg.resampled and self.train:
            rng = random.Random(f"{self.s.seed}-resample-{self.s.rank}-{worker}")
            empty = 0
            while True:
                got = False
                for sample in self._raw([rng.choice(self.urls)], counter):
                    if self._keep(sample, counter):
                        got = True
                        yield sample
                empty = 0 if got else empty + 1
                if empty >= MAX_EMPTY_SHARD_DRAWS:
                    raise DataError(f"rank {self.s.rank} worker {worker}: {empty} shard draws in a row had no "
                                    f"usable sample (skips: {dict(counter.counts)})")
        urls, slots, slot = self._shards_for(worker, n_workers)
        index = 0
        for sample in self._raw(urls, counter):
            if slots > 1:
                index += 1
                if (index - 1) % slots != slot:
                    continue
            if self._keep(sample, counter):
                yield sample

    def _shuffled(self, stream: Iterator[dict], worker: int) -> Iterator[dict]:
        if not self.train or self.cfg.shuffle_buffer <= 1:
            yield from stream
            return
        rng = random.Random(f"{self.s.seed}-shuffle-{self.epoch}-{self.s.rank}-{worker}")
        buf: list[dict] = []
        initial = min(self.cfg.shuffle_initial, self.cfg.shuffle_buffer)
        stream = iter(stream)
        for sample in stream:
            buf.append(sample)
            if len(buf) < self.cfg.shuffle_buffer:  # grow the buffer two-for-one until it is full
                nxt = next(stream, None)
                if nxt is not None:
                    buf.append(nxt)
            if len(buf) >= initial:
                yield self._pick(buf, rng)
        while buf:
            yield self._pick(buf, rng)

    @staticmethod
    def _pick(buf: list[dict], rng: random.Random) -> dict:
        k = rng.randrange(len(buf))
        buf[k], buf[-1] = buf[-1], buf[k]
        return buf.pop()

    def frame_spec(self, frames: int) -> FrameSpec:
        return FrameSpec(frames=frames, image_size=self.s.image_size, train=self.train,
                         resize_short=self.cfg.resize_short, crop_scale=tuple(self.cfg.crop_scale))

    def _decode(self, sample: dict, spec: FrameSpec, rng: random.Random) -> dict:
        meta = sample["__meta__"]
        return {"video": decode_frames(sample, meta, spec, rng),
                "texts": sample_texts(meta, self.s.num_transcripts),
                "key": sample["__key__"], "video_id": str(meta.get("video_id", sample["__key__"]))}

    def collate(self, items: list[dict]) -> dict:
        """B decoded samples -> the model's batch; all B*K transcripts are tokenized in one call."""
        b, k = len(items), self.s.num_transcripts
        texts = [t for item in items for t in item["texts"]]
        tok = self.tokenizer(texts, max_length=self.s.max_text_length, truncation=True,
                             padding=self.cfg.text_padding, return_tensors="pt")
        return {
            "video": torch.stack([item["video"] for item in items]),                # [B, 3, T, S, S]
            "text_ids": tok["input_ids"].view(b, k, -1).long(),                      # [B, K, L]
            "text_mask": tok["attention_mask"].view(b, k, -1).long(),                # [B, K, L]
            "keys": [item["key"] for item in items],
            "transcripts": [item["texts"] for item in items],
            "video_ids": [item["video_id"] for item in items],
        }

    # -- the whole stream -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        worker, n_workers = self._worker()
        if worker in self.ended:
            yield {"_end": worker, "_skips": {}}
            return
        counter = SkipCounter()
        start = self.start_positions.get(worker, 0)
        position = 0
        pending: list[dict] = []
        n_batches = 0
        post = self.s.post_frames
        for sample in self._shuffled(self._filtered(worker, n_workers, counter), worker):
            position += 1
            if position <= start:  # resume: these were consumed before the checkpoint (not decoded)
                continue
            frames = post[n_batches % len(post)] if post else self.s.frames
            rng = random.Random(f"{self.s.seed}-aug-{self.epoch}-{self.s.rank}-{worker}-{position}")
            try:
                pending.append(self._decode(sample, self.frame_spec(frames), rng))
            except Exception as exn:  # noqa: BLE001 - a broken sample is a counted skip, never a crash
                counter(exn)
                continue
            if len(pending) == self.s.batch_size:
                batch = self.collate(pending)
                pending = []
                n_batches += 1
                batch.update(_worker=worker, _position=position, _skips=dict(counter.counts))
                yield batch
        if pending and not self.train:  # eval keeps the last partial batch; train drops it
            batch = self.collate(pending)
            batch.update(_worker=worker, _position=position, _skips=dict(counter.counts))
            yield batch
        yield {"_end": worker, "_skips": dict(counter.counts)}


# ---------------------------------------------------------------------------------------------------
# the rank's loader: fixed merge order + exact position


class ThreadPrefetch:
    """Run an iterator in a daemon thread, `depth` items ahead of the consumer; its errors are raised in
    the consumer. Items come out in the iterator's order, so the loader's resume state (taken from the
    items as they are consumed) is that of the batches the step has had, not of those prepared ahead.
    Dropping (or closing) the consumer's side stops the thread at its next item."""

    _DONE = object()

    def __init__(self, source: Iterator[dict], depth: int) -> None:
        import queue
        import threading

        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        # The thread holds the queue and the event, not this object: dropping it runs __del__.
        self.thread = threading.Thread(target=_prefetch_into, args=(source, self.queue, self.stop, self._DONE),
                                       name="shard-prefetch", daemon=True)
        self.thread.start()
        _LIVE_PREFETCH.add(self)

    def __iter__(self) -> "ThreadPrefetch":
        return self

    def __next__(self) -> dict:
        item, error = self.queue.get()
        if item is self._DONE:
            self.queue.put((item, error))   # every later next() ends the same way
            if error is not None:
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        self.stop.set()

    __del__ = close


_LIVE_PREFETCH: "weakref.WeakSet[ThreadPrefetch]" = weakref.WeakSet()


@atexit.register
def _stop_prefetch_threads() -> None:
    """At exit, let every prefetch thread leave the C++ op it is in (a JPEG decode, a resize) before the
    interpreter goes: a daemon thread still inside torch then aborts the process ("terminate called
    without an active exception") after a run that finished."""
    for prefetch in list(_LIVE_PREFETCH):
        prefetch.stop.set()
        prefetch.thread.join(timeout=30)


def _prefetch_into(source: Iterator[dict], out, stop, done) -> None:
    import queue

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in source:
            if not put((item, None)):
                return
        put((done, None))
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
        put((done, exc))


class ShardLoader:
    """Iterate a ShardDataset through a DataLoader in a fixed worker order, epoch after epoch.

    The order is round-robin over the logical workers still running (as torch's DataLoader does), kept
    by this class rather than by timing, so that `state_dict()` after any batch (epoch, each worker's
    stream position, the next worker) restarts the stream exactly there: on resume the workers skip the
    raw samples they had consumed and the DataLoader's first worker plays the next logical worker.
    """

    def __init__(self, dataset: ShardDataset, num_workers: int, prefetch_factor: int = 2,
                 epochs: int | None = None) -> None:
        self.ds, self.num_workers, self.prefetch_factor = dataset, num_workers, prefetch_factor
        self.epochs = epochs  # None: forever (training); 1: one pass (evaluation)
        self.n_logical = max(1, num_workers)
        self.epoch = 0
        self.positions: dict[int, int] = {}
        self.ended: set[int] = set()
        self.next_worker = 0
        self.skips: dict[int, dict[str, int]] = {}
        self.batches_this_epoch = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "positions": {str(k): v for k, v in self.positions.items()},
                "ended": sorted(self.ended), "next_worker": self.next_worker, "num_workers": self.n_logical,
                "batches_this_epoch": self.batches_this_epoch}

    def load_state_dict(self, state: dict) -> None:
        if int(state["num_workers"]) != self.n_logical:
            raise DataError(f"the checkpoint's data loader ran {state['num_workers']} workers per rank; resume with "
                            f"--set data.num_workers={state['num_workers']} (now {self.n_logical})")
        self.epoch = int(state["epoch"])
        self.positions = {int(k): int(v) for k, v in state["positions"].items()}
        self.ended = set(int(w) for w in state["ended"])
        self.next_worker = int(state["next_worker"])
        self.batches_this_epoch = int(state.get("batches_this_epoch", 0))

    def restart(self) -> None:
        """Back to the first sample of epoch 0. An evaluation pass that stops early (first_samples) leaves
        the loader mid-stream; without this the next pass would go on from there."""
        self.epoch, self.positions, self.ended, self.next_worker, self.batches_this_epoch = 0, {}, set(), 0, 0

    def skip_counts(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for counts in self.skips.values():
            total.update(counts)
        return dict(total)

    def _dataloader(self):
        self.ds.epoch, self.ds.rotation = self.epoch, self.next_worker
        self.ds.start_positions, self.ds.ended = dict(self.positions), set(self.ended)
        if self.num_workers == 0:
            # In-process loading: a thread prepares the next batches while the step computes (JPEG decode,
            # resize and tokenizing release the GIL), so the step does not wait for them.
            return iter(self.ds) if self.prefetch_factor < 1 else ThreadPrefetch(iter(self.ds), self.prefetch_factor)
        # Its own generator: starting workers must not draw from the global torch RNG, which the model
        # uses (masks, shuffles) and a checkpoint restores.
        generator = torch.Generator().manual_seed(self.ds.s.seed * 1000003 + self.epoch)
        loader = torch.utils.data.DataLoader(self.ds, batch_size=None, num_workers=self.num_workers,
                                             prefetch_factor=self.prefetch_factor, persistent_workers=False,
                                             generator=generator)
        return iter(loader)

    def _next_active(self, after: int) -> int:
        for step in range(1, self.n_logical + 1):
            w = (after + step) % self.n_logical
            if w not in self.ended:
                return w
        return after

    def __iter__(self) -> Iterator[dict]:
        while self.epochs is None or self.epoch < self.epochs:
            stream = self._dataloader()
            try:
                yield from self._epoch(stream)
            finally:   # also when the consumer stops early: a prefetch thread must not read on
                if isinstance(stream, ThreadPrefetch):
                    stream.close()
            del stream
            self.epoch += 1
            self.positions, self.ended, self.next_worker, self.batches_this_epoch = {}, set(), 0, 0

    def _epoch(self, stream) -> Iterator[dict]:
        buffers: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        if self.next_worker in self.ended:
            self.next_worker = self._next_active(self.next_worker)
        while len(self.ended) < self.n_logical:
            w = self.next_worker
            while not buffers[w]:
                try:
                    item = next(stream)
                except StopIteration:
                    raise DataError(f"data loader workers stopped early (rank {self.ds.s.rank})") from None
                buffers[item.get("_end", item.get("_worker"))].append(item)
            item = buffers[w].popleft()
            self.skips[w] = item["_skips"]
            if "_end" in item:
                self.ended.add(w)
                self.next_worker = self._next_active(w)
                continue
            self.positions[w] = item.pop("_position")
            item.pop("_worker"), item.pop("_skips")
            self.next_worker = self._next_active(w)
            self.batches_this_epoch += 1
            yield item
        if self.batches_this_epoch == 0:
            raise DataError(
                f"rank {self.ds.s.rank}: no usable {self.ds.s.split} samples in {len(self.ds.urls)} shard(s) "
                f"(skipped: {self.skip_counts() or 'none'}; batch size {self.ds.s.batch_size}, hold-out "
                f"{self.ds.cfg.holdout_fraction}) - check data.shards")


def to_device(batch: dict, device: torch.device, dtype: torch.dtype | None) -> dict:
    """A batch's tensors moved to `device`, floating ones cast to `dtype` (None: kept); lists kept as they are."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
        out[key] = value
    return out


def first_samples(loader: ShardLoader, limit: int = 0) -> Iterator[dict]:
    """One pass over the loader's first `limit` samples (0: all of one epoch), from the start every call,
    the last batch cut to size: every held-out evaluation scores the same samples."""
    loader.restart()
    loader.epochs = 1
    seen = 0
    stream = iter(loader)
    try:
        for batch in stream:
            b = batch["video"].shape[0]
            if limit and seen + b > limit:
                batch = {k: v[:limit - seen] for k, v in batch.items()}      # tensors and lists alike
                b = limit - seen
            seen += b
            yield batch
            if limit and seen >= limit:
                return
    finally:
        stream.close()          # ends a DataLoader worker still reading ahead


def build_loader(cfg: DataConfig, settings: LoaderSettings, tokenizer: Any,
                 epochs: int | None = None) -> ShardLoader:
    """The rank's loader; raises DataError (one line) when the shards or blocklist cannot be found."""
    dataset = ShardDataset(cfg, settings, tokenizer)
    workers = cfg.num_workers if settings.split == "train" else min(cfg.num_workers, 1)
    return ShardLoader(dataset, workers, cfg.prefetch_factor, epochs=epochs)
