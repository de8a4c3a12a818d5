"""Both ONNX exports of packed model files against the packed model itself, on a real split, one clip at a time.

    .venv/bin/python bench/bench_onnx_split.py results/demo/models/quads-4b-s0.quads \\
        results/demo/models/quads-2b-s0.quads --data ~/.cache/quads/corpora/commands-v8 [--split test]

Per file, the codebook ONNX (`quads export --onnx`) and the dequantized ONNX (`--onnx-float`) are written to a
temporary folder and run with onnxruntime (1 thread) on every clip of the split, beside the packed model in
PyTorch. Printed: the largest |onnxruntime - torch| logit difference, the largest |logit|, how many predictions
agree with PyTorch's, and each one's accuracy. `bench_onnx.py` measures sizes and latency.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

import quads
from quads.commands.evaluate import load_evaluation_split
from quads.commands.export import export_run_onnx
from quads.features import compute_features
from quads.runtime.onnx_export import onnx_session


def compare(model_path: Path, data: Path, split: str, folder: Path) -> None:
    model = quads.load(model_path)
    utterances, _ = load_evaluation_split(data, split, model.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # low-rate or long clips are warned about by `quads eval`, not here
        features = compute_features(utterances, model.frontend_config, cache=None, progress=False)
    truth = [model.labels.index(utterance.label) for utterance in utterances]
    sessions = {}
    for name in ("codebook", "float"):
        path = folder / f"{model_path.stem}-{name}.onnx"
        export_run_onnx(model_path, path, codebooks=name == "codebook")
        sessions[name] = onnx_session(path, threads=1)
    worst = dict.fromkeys(sessions, 0.0)
    agree = dict.fromkeys(sessions, 0)
    correct = dict.fromkeys(["torch", *sessions], 0)
    largest = 0.0
    for feature, label in zip(features, truth, strict=True):
        batch, mask = feature[None], torch.ones(1, feature.shape[-1], dtype=torch.bool)
        with torch.no_grad():
            expected = model.classifier(batch, mask).logits.numpy()
        largest = max(largest, float(np.abs(expected).max()))
        correct["torch"] += int(expected.argmax() == label)
        for name, session in sessions.items():
            (actual,) = session.run(None, {"features": batch.numpy(), "mask": mask.numpy()})
            worst[name] = max(worst[name], float(np.abs(actual - expected).max()))
            agree[name] += int(actual.argmax() == expected.argmax())
            correct[name] += int(actual.argmax() == label)
    count = len(utterances)
    print(f"{model_path} on {split} ({count} clips), largest |logit| {largest:.1f}")
    for name in sessions:
        print(f"  {name} ONNX: max |ort - torch| {worst[name]:.2e}, {agree[name]}/{count} predictions agree, "
              f"accuracy {100 * correct[name] / count:.2f} % (torch {100 * correct['torch'] / count:.2f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for model_path in args.models:
            compare(model_path, args.data.expanduser(), args.split, Path(folder))


if __name__ == "__main__":
    main()
