"""ONNX export of a (dequantized) student: log-mel features + mask in, intent logits out, any batch and length.

Uses PyTorch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): with torch 2.13 the dynamo
exporter needs the `onnxscript` package, which quads does not depend on, while the TorchScript one covers every
op our encoders use (conv, LayerNorm, scaled_dot_product_attention, dynamic arange for positions and masks).
The file is written atomically; `verify_onnx` runs it with onnxruntime and compares to PyTorch.

Given the student's quantized tensors (`quads.compression.packed_reader.read_packed(...).quantized`), the file keeps
their codebook form: bit-packed indices and codebooks, the weights rebuilt in the graph
(`quads.runtime.onnx_codebook`), so it is about as small as the packed file. Without them, every weight is stored as
float32 (the dequantized model).

Graph: inputs `features` float [batch, n_mels, frames] and `mask` bool [batch, frames] (True = real frame);
output `logits` float [batch, num_labels].
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from quads.atomic import atomic_write_bytes
from quads.compression.codebook import QuantizedTensor
from quads.errors import ConfigError
from quads.models.classifier import IntentClassifier
from quads.onnx_session import cpu_session

INPUT_NAMES = ["features", "mask"]
OUTPUT_NAMES = ["logits"]


class _LogitsOnly(nn.Module):
    """The exported graph returns logits only; the embedding z is a training-time quantity."""

    def __init__(self, classifier: IntentClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.classifier(features, mask).logits


def export_onnx(classifier: IntentClassifier, path: str | Path, n_mels: int, opset: int = 17,
                quantized: dict[str, QuantizedTensor] | None = None) -> Path:
    """Write `classifier` as an ONNX file with dynamic batch and time axes; returns the path. With `quantized`
    (names as in the classifier's state dict), those weights are stored in codebook form."""
    if n_mels != classifier.n_mels:
        raise ConfigError(
            f"export: n_mels = {n_mels} but the classifier's encoder expects {classifier.n_mels} mel bins"
        )
    if opset < 14:
        raise ConfigError(f"export: opset {opset} is too old; scaled_dot_product_attention needs opset >= 14 (use 17)")
    path = Path(path)
    frames = 203  # odd, not a multiple of any stride: keeps the tracer from baking in a "nice" length
    features = torch.zeros(2, n_mels, frames)
    mask = torch.ones(2, frames, dtype=torch.bool)
    mask[1, 150:] = False
    was_training = classifier.training
    classifier.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.onnx.export(
                _LogitsOnly(classifier),
                (features, mask),
                buffer,
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                dynamic_axes={
                    "features": {0: "batch", 2: "frames"},
                    "mask": {0: "batch", 1: "frames"},
                    "logits": {0: "batch"},
                },
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        classifier.train(was_training)
    data = buffer.getvalue()
    if quantized:
        import onnx

        from quads.runtime.onnx_codebook import with_codebooks

        data = with_codebooks(onnx.load_from_string(data), quantized).SerializeToString()
    atomic_write_bytes(path, data)
    return path


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session for an exported classifier."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: ONNX file not found")
    try:
        return cpu_session(path, threads)
    except Exception as error:  # onnxruntime raises several unrelated types for a bad file
        raise ConfigError(f"{path}: not a loadable ONNX model ({error})") from error


def verify_onnx(
    classifier: IntentClassifier, path: str | Path, features: Tensor | None = None, mask: Tensor | None = None
) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's logits on these inputs (by default a padded
    batch of random features at two lengths, 57 and 311 frames, unlike the length the export traced)."""
    if features is None or mask is None:
        generator = torch.Generator().manual_seed(0)
        return max(
            verify_onnx(classifier, path, *_check_inputs(classifier.n_mels, frames, generator)) for frames in (57, 311)
        )
    session = onnx_session(path)
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            expected = classifier(features, mask).logits.numpy()
    finally:
        classifier.train(was_training)
    feeds = {"features": features.numpy().astype(np.float32), "mask": mask.numpy().astype(bool)}
    (actual,) = session.run(OUTPUT_NAMES, feeds)
    return float(np.abs(actual - expected).max())


def _check_inputs(n_mels: int, frames: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    features = torch.randn(3, n_mels, frames, generator=generator)
    mask = torch.ones(3, frames, dtype=torch.bool)
    mask[1, frames // 2 :] = False
    mask[2, frames - 3 :] = False
    return features.masked_fill(~mask[:, None, :], 0.0), mask
