"""ONNX with codebooks versus the dequantized (float) ONNX export: file size against the packed file, latency.

    .venv/bin/python bench/bench_onnx.py [--model conv-200k] [--bits 4 2] [--weights-per-centroid 256]
                                         [--repeats 200] [--frames 200]

Nothing is trained: the student is built with random weights (seed 0, the built-in corpus's 31 labels, 80 mels),
quantized with `post_training_quantize(model, QuantizationSpec(bits=b, weights_per_centroid=N))` (N: the default
config's group codebooks unless `--weights-per-centroid` says otherwise; 0 = one codebook per tensor) and written with
`quads.compression.packed.save_packed` and the metadata `quads export` writes; then
`quads.commands.export.export_run_onnx` writes both ONNX files of that packed file (`--onnx`: codebooks;
`--onnx-float`: dequantized), as the CLI does.

Printed per bit width:
- bytes: the packed file, its theoretical payload (Σ params·b/8 + Σ codebooks + float remainder) and the ratio
  (target ≤ 1.05 + 2 KiB); the codebook ONNX and the float ONNX, each / the packed file (target ≤ 1.3×);
- max |onnxruntime - torch| of the logits of each ONNX file against the packed model (padded batches at two lengths);
- onnxruntime session creation time (median of 5; the codebook graph's rebuild nodes are folded here, once) and
  latency per utterance of `--frames` log-mel frames (2 s at 100 frames/s), batch 1, 1 intra-op thread, median and
  p90 of `--repeats` runs alternating between the two sessions so that background load hits both alike; the
  codebook / float ratio (target ≤ 1.3×).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import quads
from quads.commands.export import export_run_onnx
from quads.compression.packed import save_packed
from quads.compression.quantize import post_training_quantize
from quads.compression.spec import QuantizationSpec
from quads.config import RunConfig
from quads.models import build_student
from quads.runtime.onnx_export import onnx_session


def command_labels() -> list[str]:
    rows = (Path(quads.__file__).parent / "resources" / "command_phrases.tsv").read_text().splitlines()[1:]
    return sorted({"_".join(row.split("\t")[1:4]) for row in rows})


def write_packed(path: Path, model_name: str, bits: int, weights_per_centroid: int) -> dict:
    labels = command_labels()
    torch.manual_seed(0)
    classifier = build_student(num_labels=len(labels), encoder=model_name, n_mels=80, head="mlp").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tensors too small for an 8-bit codebook stay float
        spec = QuantizationSpec(bits=bits, weights_per_centroid=weights_per_centroid)
        quantized = post_training_quantize(classifier, spec).export()
    float_state = {name: t for name, t in classifier.state_dict().items() if name not in quantized}
    metadata = {"architecture": classifier.config_dict(),
                "frontend": {"n_mels": 80, "sample_rate": 16000, "n_fft": 400, "hop_length": 160},
                "labels": labels, "recipe": "ptq", "bits": bits,
                "metrics": {"valid_accuracy": 0.0, "test_accuracy": 0.0}}
    info = save_packed(path, float_state, quantized, metadata)
    return {"file": info.file_bytes, "theoretical": info.theoretical_bytes}


def time_sessions(paths: dict[str, Path], frames: int, repeats: int) -> dict[str, dict[str, float]]:
    creation = {name: statistics.median(_time(lambda p=path: onnx_session(p, threads=1)) for _ in range(5))
                for name, path in paths.items()}
    sessions = {name: onnx_session(path, threads=1) for name, path in paths.items()}
    feeds = {"features": np.random.default_rng(0).standard_normal((1, 80, frames), dtype=np.float32),
             "mask": np.ones((1, frames), dtype=bool)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(10):  # warm-up
        for session in sessions.values():
            session.run(None, feeds)
    for _ in range(repeats):
        for name, session in sessions.items():
            times[name].append(_time(lambda s=session: s.run(None, feeds)))
    return {name: {"create_ms": 1e3 * creation[name], "median_ms": 1e3 * statistics.median(values),
                   "p90_ms": 1e3 * float(np.percentile(values, 90))} for name, values in times.items()}


def _time(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="conv-200k")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--weights-per-centroid", type=int, default=RunConfig().quant.weights_per_centroid)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for bits in args.bits:
            packed = Path(folder) / f"{bits}.quads"
            sizes = write_packed(packed, args.model, bits, args.weights_per_centroid)
            paths = {"codebook": Path(folder) / f"{bits}.onnx", "float": Path(folder) / f"{bits}-float.onnx"}
            difference = {name: export_run_onnx(packed, path, codebooks=name == "codebook")
                          for name, path in paths.items()}
            onnx_bytes = {name: path.stat().st_size for name, path in paths.items()}
            timing = time_sessions(paths, args.frames, args.repeats)
            print(f"{args.model} {bits}-bit, {args.weights_per_centroid} weights per centroid")
            print(f"  packed file {sizes['file']:,} B, theoretical {sizes['theoretical']:,} B: "
                  f"{sizes['file'] / sizes['theoretical']:.3f}x (+{sizes['file'] - sizes['theoretical']:,} B)")
            for name in paths:
                print(f"  {name} ONNX {onnx_bytes[name]:,} B = {onnx_bytes[name] / sizes['file']:.2f}x the packed "
                      f"file; max |ort - torch| {difference[name]:.2e}; session {timing[name]['create_ms']:.1f} ms; "
                      f"latency median {timing[name]['median_ms']:.3f} ms, p90 {timing[name]['p90_ms']:.3f} ms")
            ratio = timing["codebook"]["median_ms"] / timing["float"]["median_ms"]
            print(f"  latency codebook / float ONNX (batch 1, 1 thread, {args.frames} frames): {ratio:.3f}x")


if __name__ == "__main__":
    main()
