"""`quads export`: turn a finished run folder into one packed model file (and optionally ONNX).

The packed file (see `quads.compression.packed`) holds bit-packed codebook indices, fp16 codebooks, the float remainder,
the architecture, the front-end and the label map: everything `quads.load` needs, and nothing executable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quads.compression.packed import PackedInfo, save_packed
from quads.compression.quantize import CodebookQuantizer
from quads.folder_lock import exclusive_writer
from quads.training.checkpoints import load_student


def export_run(run_dir: str | Path, out_path: str | Path) -> PackedInfo:
    """Write the final student of `run_dir` as a packed model file at `out_path`."""
    from quads.models import build_classifier

    student = load_student(run_dir)
    classifier = build_classifier(student["architecture"])
    classifier.load_state_dict(student["model"])
    quantized = {}
    if student["quantizer"] is not None:
        quantizer = CodebookQuantizer(classifier, fit=False)
        quantizer.load_state_dict(student["quantizer"])
        quantized = quantizer.export()
    float_state = {name: tensor for name, tensor in classifier.state_dict().items() if name not in quantized}
    metadata = {
        "architecture": student["architecture"],
        "frontend": student["frontend"],
        "labels": student["labels"],
        "recipe": student["recipe"],
        "bits": student["bits"],
        "metrics": student["metrics"],
    }
    return save_packed(out_path, float_state, quantized, metadata)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a finished `quads compress` run folder")
    parser.add_argument("--out", type=Path, required=True, help="packed model file to write (e.g. model.quads)")
    parser.add_argument("--onnx", type=Path, help="also write the student as ONNX here, its quantized weights kept "
                                                   "as bit-packed indices + codebooks (about the packed file's size)")
    parser.add_argument("--onnx-float", type=Path, help="also write the dequantized student (every weight float32) "
                                                        "as ONNX here, for runtimes that need plain weights")
    parser.add_argument("--wait", action="store_true", help="if another process is writing --out, wait for it "
                        "instead of stopping")


def export_run_onnx(packed_path: str | Path, onnx_path: str | Path, codebooks: bool = True) -> float:
    """Write the model of a packed file as ONNX (with its codebooks, or dequantized) and return the largest
    |onnxruntime - torch| difference of the logits, checked on padded batches at two lengths."""
    from quads.compression.packed_reader import read_packed
    from quads.runtime.model import load
    from quads.runtime.onnx_export import export_onnx, verify_onnx

    model = load(packed_path)
    quantized = read_packed(packed_path).quantized if codebooks else None
    export_onnx(model.classifier, onnx_path, model.frontend_config.n_mels, quantized=quantized)
    return verify_onnx(model.classifier, onnx_path)


def run(args: argparse.Namespace) -> int:
    with exclusive_writer(args.out, "export", wait=args.wait, is_file=True):
        info = export_run(args.run_dir, args.out)
    print(f"wrote {args.out}: {info.file_bytes:,} bytes on disk, theoretical {info.theoretical_bytes:,} bytes")
    for onnx_path, codebooks in ((args.onnx, True), (args.onnx_float, False)):
        if onnx_path:
            difference = export_run_onnx(args.out, onnx_path, codebooks)
            print(f"wrote {onnx_path}: {onnx_path.stat().st_size:,} bytes, max |onnxruntime - torch| = "
                  f"{difference:.2e}")
    return 0
