"""The DINOv2 backbone's tokens as the ONNX graph itself computes them (onnxruntime), for the tests that
check our torch weights against it (tests/features, tests/training)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from features import dinov2


def onnx_backbone_tokens(weights: Path, images: np.ndarray) -> np.ndarray:
    """float32 [B, 3, 224, 224] (ImageNet-normalised) -> the graph's final-layernorm tokens [B, 257, 384]."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(weights))
    # Expose the backbone's final layernorm (inside the saliency graph) as an output.
    model.graph.output.insert(0, onnx.helper.make_tensor_value_info(dinov2.ONNX_TOKENS, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([dinov2.ONNX_TOKENS], {dinov2.ONNX_INPUT: images.astype(np.float32)})[0]
