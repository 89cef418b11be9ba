"""The `dinov2` backend of features.embed.FrameEmbedder, with the settings configs/demo.yaml runs.

Copies of a demo frame (JPEG q30, a crop) must rank above every unrelated frame of the demo downstream
set; the fingerprint keeps stored features of other backends and sizes from being reused.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from features import dinov2
from features.embed import FrameEmbedder

ROOT = Path(__file__).resolve().parents[2]
TINY_CLIP = dict(model="ViT-S-32", random_init=True, image_size=32, batch_size=8, threads=1)
DIMS = {"cls": 384, "mean": 384, "cls+mean": 768, "rows2": 768}  # feature width per pooling


def demo_model(section: str = "leakage") -> dict:
    return dict(yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())[section]["model"])


@pytest.fixture(scope="module")
def embedder() -> FrameEmbedder:
    if not dinov2.default_weights_path().is_file():
        pytest.skip("DINOv2 weights missing: run scripts/setup.sh")
    model = demo_model()
    assert model["backend"] == "dinov2"  # what the demo's leakage job uses
    return FrameEmbedder(**model)


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _crop(frame: np.ndarray, fraction: float, anchor: str) -> np.ndarray:
    h, w = frame.shape[:2]
    ch, cw = int(h * fraction), int(w * fraction)
    top, left = ((h - ch) // 2, (w - cw) // 2) if anchor == "centre" else (0, 0)
    return np.ascontiguousarray(frame[top:top + ch, left:left + cw])


def test_copies_rank_above_every_unrelated_downstream_frame(embedder: FrameEmbedder, demo_corpus: Path):
    from dedup.frames import decode_frames

    truth = json.loads((demo_corpus / "downstream" / "ground_truth.json").read_text())
    manifest = [json.loads(line) for line in (demo_corpus / "manifest.jsonl").read_text().splitlines() if line]
    originals = np.concatenate([decode_frames(row["url"], 2, short_side=256).frames for row in manifest])  # 16
    unrelated = np.concatenate([decode_frames(u["path"], 8, short_side=256).frames for u in truth["unrelated"]])
    assert len(unrelated) == 80 and any(u["hard_negative"] for u in truth["unrelated"])
    copies = {"jpeg q30": [_jpeg(f, 30) for f in originals],
              "centre crop 80%": [_crop(f, 0.8, "centre") for f in originals],
              "top-left crop 70%": [_crop(f, 0.7, "top-left") for f in originals]}
    base = embedder.embed(originals).astype(np.float32)
    others = embedder.embed(unrelated).astype(np.float32)
    for kind, frames in copies.items():
        feats = embedder.embed(frames).astype(np.float32)
        to_original = np.einsum("nd,nd->n", feats, base)     # each copy vs its own original
        to_unrelated = (feats @ others.T).max(axis=1)         # each copy vs its nearest unrelated frame
        worst = int(np.argmin(to_original - to_unrelated))
        assert (to_original > to_unrelated).all(), (kind, worst, to_original[worst], to_unrelated[worst])
    # ... and each original is nearer to its JPEG copy than to any other original of the corpus.
    jpeg = embedder.embed(copies["jpeg q30"]).astype(np.float32)
    assert (np.argmax(jpeg @ base.T, axis=1) == np.arange(len(base))).all()


def test_features_are_fp16_unit_vectors_with_their_own_fingerprint(embedder: FrameEmbedder):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(3, 120, 160, 3), dtype=np.uint8)
    feats = embedder.embed(frames)
    model = demo_model()
    dim = DIMS[model["pool"]]
    assert feats.dtype == np.float16 and feats.shape == (3, dim) and embedder.dim == dim
    np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=2e-3)
    out = embedder({"frames": [frames[:1], frames[1:]]})
    assert [c.shape for c in out["clip"]] == [(1, dim), (2, dim)]
    options = f"+L{model['layer']}+{model['pool']}"
    assert embedder.fingerprint == dinov2.fingerprint(model["image_size"], options)
    assert embedder.model_name == "dinov2-vits14" and embedder.image_size == model["image_size"]
    # Only the blocks the feature needs are kept (and run).
    assert len(embedder.visual.backbone.blocks) == model["layer"]


def test_fingerprint_differs_across_backends_input_sizes_layers_and_pooling(embedder: FrameEmbedder):
    model = demo_model()
    clip = FrameEmbedder(seed=0, **TINY_CLIP)
    other_size = FrameEmbedder(**dict(model, image_size=model["image_size"] + 14))
    other_layer = FrameEmbedder(**dict(model, layer=model["layer"] + 1))
    other_pool = FrameEmbedder(**dict(model, pool="mean" if model["pool"] != "mean" else "cls"))
    canonical = FrameEmbedder(backend="dinov2", threads=1)  # the backbone's output: final-norm CLS at 224
    prints = [e.fingerprint for e in (clip, embedder, other_size, other_layer, other_pool, canonical)]
    assert len(set(prints)) == len(prints), prints
    assert not clip.fingerprint.startswith("dinov2") and f"@{model['image_size'] + 14}+" in other_size.fingerprint
    assert canonical.fingerprint.startswith("dinov2-vits14@224+L12+cls:") and canonical.dim == 384


def test_stored_features_of_another_backend_are_recomputed(embedder: FrameEmbedder):
    from dedup.corpus import CorpusSample, sample_features

    rng = np.random.default_rng(1)
    frames = [_jpeg(f, 90) for f in rng.integers(0, 255, size=(2, 64, 80, 3), dtype=np.uint8)]
    clip = FrameEmbedder(seed=0, **TINY_CLIP)

    def sample(feats: np.ndarray, model: str) -> CorpusSample:
        return CorpusSample(key="v_0", video_id="v", shard="", frames=frames, frame_times=[0.0, 1.0], meta={},
                            clip=feats, clip_model=model)

    feats, source = sample_features(sample(clip.embed(frames), clip.fingerprint), embedder)
    assert source == "computed" and feats.shape == (2, embedder.dim)
    # Same width, another fingerprint (another backend or input size): still not taken.
    fake = np.zeros((2, embedder.dim), np.float16)
    for other in ("ViT-S-32@224:x:y", embedder.fingerprint.replace("@", "@1", 1)):
        assert sample_features(sample(fake, other), embedder)[1] == "computed"
    again, source = sample_features(sample(feats, embedder.fingerprint), embedder)
    assert source == "stored" and np.array_equal(again, feats)


def test_config_selects_the_backend_and_checks_it():
    from common.config import ConfigError
    from dedup.config import ModelConfig
    from features.embed import embedder_kwargs

    cfg = ModelConfig(backend="dinov2", image_size=168)
    cfg.validate()  # no `pretrained` needed: the set-up's .cache file is the default
    kwargs = embedder_kwargs(cfg)
    assert kwargs["backend"] == "dinov2" and kwargs["pool"] == "cls" and kwargs["image_size"] == 168
    assert ModelConfig().backend == "open_clip"
    with pytest.raises(ConfigError, match="random_init"):
        ModelConfig(backend="dinov2", random_init=True).validate()
    with pytest.raises(ConfigError, match="multiple of 14"):
        ModelConfig(backend="dinov2", image_size=160).validate()
    with pytest.raises(ValueError, match="multiple of 14"):
        FrameEmbedder(backend="dinov2", image_size=160)
    with pytest.raises(ValueError, match="backend"):
        FrameEmbedder(backend="clip")
    assert demo_model("near_dups")["backend"] == demo_model("leakage")["backend"] == "dinov2"
