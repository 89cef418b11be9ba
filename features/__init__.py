"""Frame features shared by the data job and the leakage check: one frame embedder that the pipeline's
optional embed stage and dedup/ both import, so neither imports the other for it.

In: frames (uint8 arrays or JPEG bytes). Out: L2-normalised float16 features with a fingerprint that
names the model, its input size and its weights (`embed.FrameEmbedder`: open_clip, or DINOv2 ViT-S/14 from
`dinov2.py`, whose torch ViT is `vit.py`; `dinov2.timm_state_dict()` also serves the training side).
Imports only common/."""
