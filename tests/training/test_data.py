"""The shard loader: batches, determinism and resume position, hold-out, blocklist, broken input."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from training.config import DataConfig
from training.data import DataError, LoaderSettings, build_loader, expand_shards, holdout_value
from training.sample_decode import FrameSpec, crop_box, pick_frame_members
from training.synthetic import write_synthetic_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(out, shards=3, samples=12, size=(40, 32), frames=8, per_bin=2, seed=3)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    from training.model import build_tokenizer
    from training.model_config import load_preset

    return build_tokenizer(load_preset("tiny"))


def settings(**kw) -> LoaderSettings:
    base = dict(batch_size=4, frames=4, image_size=24, num_transcripts=4, seed=1, max_text_length=12)
    base.update(kw)
    return LoaderSettings(**base)


def data_cfg(shards: Path, **kw) -> DataConfig:
    base = dict(shards=str(shards / "shard-*.tar"), num_workers=0, shuffle_buffer=8, shuffle_initial=4,
                holdout_fraction=0.25)
    base.update(kw)
    return DataConfig(**base)


def take(loader, n: int) -> list[dict]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def test_batch_is_typed_and_normalised(shards, tokenizer):
    batch = take(build_loader(data_cfg(shards), settings(), tokenizer), 1)[0]
    assert batch["video"].shape == (4, 3, 4, 24, 24) and batch["video"].dtype == torch.float32
    assert batch["text_ids"].shape == (4, 4, 12) and batch["text_ids"].dtype == torch.long
    assert batch["text_mask"].shape == (4, 4, 12) and batch["text_mask"].sum() > 0
    # ImageNet-normalised: values well outside [0, 1] on both sides
    assert batch["video"].min() < -0.5 and batch["video"].max() > 1.0
    assert len(batch["keys"]) == 4 and all(k.startswith("vid3x") for k in batch["keys"])
    # transcripts are in true order: window j names step j
    assert [t.split()[3] for t in batch["transcripts"][0]] == ["one", "two", "three", "four"]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_position_reproduces_the_stream(shards, tokenizer, workers):
    cfg = data_cfg(shards, num_workers=workers)
    first = build_loader(cfg, settings(), tokenizer)
    keys, state = [], None
    for i, batch in enumerate(first):           # crosses an epoch boundary (about 7 batches per epoch)
        keys.append(batch["keys"])
        if i == 2:
            state = first.state_dict()
            video_at_3 = None
        if i == 3:
            video_at_3 = batch["video"]
        if i == 10:
            break
    second = build_loader(cfg, settings(), tokenizer)
    second.load_state_dict(state)
    again = take(second, 8)
    assert [b["keys"] for b in again] == keys[3:11]
    assert torch.equal(again[0]["video"], video_at_3)   # same crops and frame candidates too


def test_holdout_splits_by_video(shards, tokenizer):
    train = [k for b in take(build_loader(data_cfg(shards), settings(), tokenizer), 6) for k in b["video_ids"]]
    ev = build_loader(data_cfg(shards), settings(split="eval"), tokenizer, epochs=1)
    held = [k for b in ev for k in b["video_ids"]]
    assert held and train
    assert not set(train) & set(held)
    assert all(holdout_value(v) < 0.25 for v in held)


def test_blocklist_skips_keys_and_videos(shards, tokenizer, tmp_path):
    all_keys = [k for b in build_loader(data_cfg(shards, holdout_fraction=0.0), settings(split="eval"),
                                        tokenizer, epochs=1) for k in b["keys"]]
    video = all_keys[0].rsplit("_", 1)[0]
    block = tmp_path / "blocklist.txt"
    block.write_text(f"# leakage report\n{video}\n{all_keys[5]}  # a sample key\n")
    loader = build_loader(data_cfg(shards, holdout_fraction=0.0, blocklist=[str(block)]),
                          settings(split="eval"), tokenizer, epochs=1)
    kept = [k for b in loader for k in b["keys"]]
    assert all(not k.startswith(video + "_") for k in kept) and all_keys[5] not in kept
    assert len(kept) == len(all_keys) - len([k for k in all_keys if k.startswith(video + "_")]) - 1
    assert loader.skip_counts()["blocklisted"] == len(all_keys) - len(kept)


def test_truncated_shard_is_skipped_with_a_count(shards, tokenizer, tmp_path):
    for p in sorted(shards.glob("shard-*.tar"))[:2]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    broken = tmp_path / "shard-000001.tar"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2 + 777])   # cut mid-member
    loader = build_loader(data_cfg(tmp_path, holdout_fraction=0.0), settings(split="eval", batch_size=1),
                          tokenizer, epochs=1)
    keys = [k for b in loader for k in b["keys"]]
    assert 12 <= len(keys) < 24                           # shard 0 whole, part of shard 1
    assert sum(loader.skip_counts().values()) >= 1


def test_bad_shard_paths_are_one_line_errors(tmp_path, tokenizer):
    with pytest.raises(DataError, match="does not exist"):
        expand_shards(str(tmp_path / "nope" / "shard-000000.tar"))
    with pytest.raises(DataError, match="matches no .tar"):
        expand_shards(str(tmp_path / "shard-*.tar"))
    (tmp_path / "shard-000000.tar").write_bytes(b"")      # empty shard
    loader = build_loader(data_cfg(tmp_path), settings(), tokenizer)
    with pytest.raises(DataError, match="no usable train samples") as err:
        take(loader, 1)
    assert "\n" not in str(err.value)


def test_unfinished_shard_without_stats_is_left_out(shards, tmp_path):
    for p in sorted(shards.glob("shard-00000[01]*")):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "shard-000001_stats.json").unlink()
    assert [Path(u).name for u in expand_shards(str(tmp_path))] == ["shard-000000.tar"]


def test_frame_choice_subsamples_bins_and_picks_candidates():
    meta = {"frames": {"times": [i * 0.5 for i in range(32)], "per_bin": 2}}   # 16 bins x 2 candidates
    rng = random.Random(0)
    centre = pick_frame_members(meta, FrameSpec(frames=8, image_size=32, train=False), rng)
    assert [m // 2 for m in centre] == [1, 3, 5, 7, 9, 11, 13, 15]           # evenly spaced bins
    train = {tuple(pick_frame_members(meta, FrameSpec(frames=8, image_size=32, train=True), rng)) for _ in range(20)}
    assert len(train) > 1 and all(m // 2 == b for t in train for m, b in zip(t, [1, 3, 5, 7, 9, 11, 13, 15]))
    assert pick_frame_members(meta, FrameSpec(frames=16, image_size=32, train=False), rng)[1::2] == centre


def test_crop_box_recipe_and_scale_jitter():
    rng = random.Random(0)
    # stored big enough (short side >= 268/224 * S): the recipe's crop, side = short / 1.196
    big = FrameSpec(frames=8, image_size=224, train=True)
    assert crop_box(300, 400, big, rng)[2] == round(300 / (268 / 224))
    # stored smaller: scale-jittered sides within crop_scale of the short side
    small = FrameSpec(frames=8, image_size=224, train=True, crop_scale=(0.7, 1.0))
    sides = {crop_box(128, 160, small, rng)[2] for _ in range(50)}
    assert len(sides) > 5 and min(sides) >= 0.7 * 128 - 1 and max(sides) <= 128
    top, left, side = crop_box(128, 160, FrameSpec(frames=8, image_size=224, train=False), rng)
    assert (top, left) == ((128 - side) // 2, (160 - side) // 2)


def test_ranks_read_disjoint_samples(shards, tokenizer):
    seen = []
    for rank in range(2):
        loader = build_loader(data_cfg(shards, holdout_fraction=0.0), settings(rank=rank, world_size=2, batch_size=1),
                              tokenizer, epochs=1)
        loader.epochs = 1
        seen.append({k for b in loader for k in b["keys"]})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 36


def test_resampled_stream_is_endless_and_resumable(shards, tokenizer):
    cfg = data_cfg(shards, resampled=True, num_workers=2)
    first = build_loader(cfg, settings(), tokenizer)
    keys = []
    for i, batch in enumerate(first):
        keys.append(batch["keys"])
        if i == 4:
            state = first.state_dict()
        if i == 12:                                   # more batches than one pass over the data
            break
    assert first.epoch == 0                           # no epoch boundaries
    second = build_loader(cfg, settings(), tokenizer)
    second.load_state_dict(state)
    assert [b["keys"] for b in take(second, 8)] == keys[5:13]


def test_in_process_prefetch_gives_the_same_stream_and_state(shards, tokenizer):
    """num_workers 0 prepares batches in a thread (prefetch_factor ahead): same batches, same resume state
    after each consumed batch as loading inline, and the thread stops when the loader is dropped."""
    import threading

    def run(prefetch: int) -> tuple[list, list, list]:
        loader = build_loader(data_cfg(shards, num_workers=0, prefetch_factor=prefetch), settings(), tokenizer)
        keys, states, videos = [], [], []
        for i, batch in enumerate(loader):          # crosses an epoch boundary
            keys.append(batch["keys"])
            states.append(loader.state_dict())
            videos.append(batch["video"])
            if i == 9:
                break
        return keys, states, videos

    inline, threaded = run(0), run(3)
    assert threaded[0] == inline[0] and threaded[1] == inline[1]
    assert all(torch.equal(a, b) for a, b in zip(threaded[2], inline[2]))
    import time

    deadline = time.time() + 5
    while any(t.name == "shard-prefetch" for t in threading.enumerate()):
        assert time.time() < deadline, "the prefetch thread outlived its loader"
        time.sleep(0.05)


def test_in_process_prefetch_raises_the_loaders_errors():
    from training.data import ThreadPrefetch

    def broken():
        yield {"a": 1}
        raise OSError("shard vanished")

    stream = ThreadPrefetch(broken(), depth=2)
    assert next(stream) == {"a": 1}
    with pytest.raises(OSError, match="shard vanished"):
        next(stream)
    with pytest.raises(OSError, match="shard vanished"):   # and stays failed
        next(stream)
