"""Frame features shared by the data job and the leakage check: one frame embedder (open_clip) that the
pipeline's optional embed stage and dedup/ both import, so neither imports the other for it.

In: frames (uint8 arrays or JPEG bytes). Out: L2-normalised float16 features with a fingerprint that
names the model, its input size and its weights (`embed.FrameEmbedder`). Imports only common/."""
