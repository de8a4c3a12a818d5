"""The packed (b-bit codebook) model file versus an fp32 checkpoint: file size, load time, load memory, latency.

    .venv/bin/python bench/bench_runtime.py [--models conv-200k whisper-tiny-like] [--bits 8 4 2]
                                            [--loads 5] [--repeats 30]

Nothing is trained: each student is built with random weights (seed 0, 31 labels, 80 mels). The fp32 baseline
is a plain safetensors file of its float state (architecture, front-end and labels in the header), loaded with
`safetensors.torch.load_file` + `build_classifier` + `load_state_dict`. Each packed file is the same model after
`post_training_quantize(model, QuantizationSpec(bits=b))`, written with `quads.compression.packed.save_packed` and the
metadata `quads export` writes, and loaded with `quads.runtime.model.load` (which checks the SHA-256 digest, unpacks
the indices and dequantizes to float32).

Measured per file:
- first load, in a fresh subprocess (1 torch thread, everything imported first): its wall time and its peak
  resident-memory increase. Peak RSS is the kernel's high-water mark VmHWM (/proc/self/status) after the load
  minus VmRSS before it, with the mark reset just before the load (`echo 5 > /proc/self/clear_refs`), so it
  counts every allocation, torch tensors included (tracemalloc would see only Python objects); where that reset
  is impossible it falls back to the increase of `ru_maxrss` (getrusage RUSAGE_SELF), which misses anything
  below the peak the imports reached. "held" is VmRSS after the load (gc + glibc `malloc_trim(0)`, so freed
  heap the allocator keeps for reuse is not counted) minus before: the memory the loaded model holds;
- load: median of `--loads` loads in this process, round-robin over the files so that background load hits
  them alike (the files are in the page cache: parse + verify + unpack + build, not disk I/O);
- latency per 2 s utterance: `predict_waveforms` on one random waveform (batch 1: log-mel front-end + forward +
  softmax), median and p90 of `--repeats`, round-robin over the loaded models, 1 torch thread.

"fp32" is the baseline for every ratio; "32-bit" is the same float model written by `save_packed` with no
codebook and loaded by `quads.runtime.model.load`, which separates the cost of the packed format's checks (full read
+ SHA-256) from that of unpacking the indices. Tensors too small for a codebook (fewer than 4 weights per
centroid, e.g. conv-200k's depthwise kernels at 8 bits) stay float, as `quads compress` would keep them.

What to expect, honestly: the runtime dequantizes every weight to float32 at load time, so the compute per
utterance is the fp32 compute and the latency ratio is ~1 (up to noise): the gains are file size and the bytes
read at load, not speed or resident memory. Timings come from a shared, loaded 2-core machine: read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from quads.audio import FrontEndConfig
from quads.compression.packed import save_packed
from quads.compression.quantize import post_training_quantize
from quads.compression.spec import QuantizationSpec
from quads.models import build_classifier, build_student
from quads.runtime.model import PackedModel, load

NUM_LABELS = 31
N_MELS = 80
FP32_METADATA_KEY = "quads-fp32"
UTTERANCE_SECONDS = 2.0


def model_metadata(classifier: torch.nn.Module, bits: int) -> dict:
    """What `quads export` stores: architecture, front-end, labels, recipe, bits, metrics."""
    return {
        "architecture": classifier.config_dict(),
        "frontend": asdict(FrontEndConfig(n_mels=N_MELS)),
        "labels": [f"intent_{index:02d}" for index in range(NUM_LABELS)],
        "recipe": "ptq" if bits < 32 else "fp32",
        "bits": bits,
        "metrics": {},
    }


def write_fp32(path: Path, classifier: torch.nn.Module) -> None:
    state = {name: tensor.detach().contiguous().clone() for name, tensor in classifier.state_dict().items()}
    metadata = {FP32_METADATA_KEY: json.dumps(model_metadata(classifier, 32))}
    safetensors.torch.save_file(state, str(path), metadata=metadata)


def load_fp32(path: Path) -> PackedModel:
    """The fp32 counterpart of `quads.runtime.model.load`: safetensors tensors + the architecture from the header."""
    with safetensors.safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()[FP32_METADATA_KEY])
    state = safetensors.torch.load_file(str(path))
    classifier = build_classifier(metadata["architecture"])
    classifier.load_state_dict(state)
    return PackedModel(classifier, FrontEndConfig(**metadata["frontend"]), metadata["labels"], metadata).eval()


def write_packed(path: Path, classifier: torch.nn.Module, bits: int) -> torch.nn.Module:
    """Quantize a copy of `classifier` (PTQ; none for 32 bits) and write it as a packed file; returns the copy."""
    model = copy.deepcopy(classifier)
    quantized = {}
    if bits < 32:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*too small for a .*codebook")
            quantized = post_training_quantize(model, QuantizationSpec(bits=bits)).export()
    float_state = {name: tensor for name, tensor in model.state_dict().items() if name not in quantized}
    save_packed(path, float_state, quantized, model_metadata(model, bits))
    return model


def loader_for(name: str) -> Callable[[Path], PackedModel]:
    return load_fp32 if name == "fp32" else load


def memory_kib() -> dict[str, int]:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def first_load(path: Path, name: str) -> None:
    """Runs in a fresh process: prints one JSON line with the first load's time and memory."""
    torch.set_num_threads(1)
    loader = loader_for(name)
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
        method = "VmHWM"
    except OSError:
        method = "ru_maxrss"
    before = memory_kib()
    before_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    model = loader(path)
    seconds = time.perf_counter() - started
    after = memory_kib()
    peak = (after["VmHWM"] - before["VmRSS"] if method == "VmHWM"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_maxrss)
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # else "held" counts freed heap the allocator keeps
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    held = memory_kib()["VmRSS"] - before["VmRSS"]
    assert model is not None
    print(json.dumps({"seconds": seconds, "peak_kib": peak, "held_kib": held, "method": method}))


def measure_first_load(path: Path, name: str) -> dict:
    command = [sys.executable, __file__, "--first-load", str(path), "--first-load-kind", name]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"loading {path} in a fresh process failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def round_robin(actions: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each action, `repeats` times, interleaved so background load hits every action alike."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - started)
    return times


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[8] if len(values) >= 2 else values[0]


def bench_preset(preset: str, bit_widths: list[int], scratch: Path, loads: int, repeats: int) -> str:
    torch.manual_seed(0)
    classifier = build_student(preset, NUM_LABELS, n_mels=N_MELS).eval()
    files = {"fp32": scratch / f"{preset}.fp32.safetensors"}
    write_fp32(files["fp32"], classifier)
    check_features, check_mask = torch.randn(1, N_MELS, 200), torch.ones(1, 200, dtype=torch.bool)
    for bits in [32, *bit_widths]:
        name = f"{bits}-bit"
        files[name] = scratch / f"{preset}.{bits}bit.quads"
        model = write_packed(files[name], classifier, bits)
        with torch.no_grad():
            expected = model(check_features, check_mask).logits
            loaded = load(files[name]).classifier(check_features, check_mask).logits
        assert torch.allclose(expected, loaded, atol=1e-5), f"{preset} {name}: the loaded model differs"

    first = {name: measure_first_load(path, name) for name, path in files.items()}
    load_times = round_robin({name: (lambda n=name, p=path: loader_for(n)(p)) for name, path in files.items()}, loads)
    models = {name: loader_for(name)(path) for name, path in files.items()}
    waveform = np.random.default_rng(0).uniform(-0.3, 0.3, int(UTTERANCE_SECONDS * 16000)).astype(np.float32)
    for model in models.values():
        model.predict_waveforms([waveform])  # warm-up
    latencies = round_robin({name: (lambda m=model: m.predict_waveforms([waveform])) for name, model in models.items()},
                            repeats)
    sizes = {name: path.stat().st_size for name, path in files.items()}

    parameters = sum(parameter.numel() for parameter in classifier.parameters())
    methods = sorted({result["method"] for result in first.values()})
    header = (f"{'file':<7} {'bytes':>11} {'size':>7} | {'1st load ms':>11} {'peak MiB':>8} {'held MiB':>8} | "
              f"{'load ms':>8} {'load':>6} | {'lat ms':>7} {'p90 ms':>7} {'lat':>6}")
    lines = [f"{preset}: {parameters:,} parameters (peak memory from {', '.join(methods)})", header, "-" * len(header)]
    base_load, base_latency = statistics.median(load_times["fp32"]), statistics.median(latencies["fp32"])
    for name in files:
        load_s, latency_s = statistics.median(load_times[name]), statistics.median(latencies[name])
        lines.append(
            f"{name:<7} {sizes[name]:>11,} {sizes[name] / sizes['fp32']:>6.3f}x | "
            f"{1000 * first[name]['seconds']:>11.1f} {first[name]['peak_kib'] / 1024:>8.1f} "
            f"{first[name]['held_kib'] / 1024:>8.1f} | {1000 * load_s:>8.1f} {load_s / base_load:>5.2f}x | "
            f"{1000 * latency_s:>7.2f} {1000 * p90(latencies[name]):>7.2f} {latency_s / base_latency:>5.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["conv-200k", "whisper-tiny-like"], help="student presets")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4, 2], choices=(1, 2, 3, 4, 8),
                        help="codebook bit widths (default 8 4 2)")
    parser.add_argument("--loads", type=int, default=7, help="timed loads per file, median reported (default 7)")
    parser.add_argument("--repeats", type=int, default=40, help="timed 2 s utterances per file (default 40)")
    parser.add_argument("--first-load", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--first-load-kind", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_load is not None:
        first_load(args.first_load, args.first_load_kind)
        return
    torch.set_num_threads(1)

    print(f"random-weight students, {NUM_LABELS} labels, {N_MELS} mels, 1 torch thread; first load in a fresh "
          f"process; load = median of {args.loads}; latency per {UTTERANCE_SECONDS:.0f} s utterance at batch 1 "
          f"(front-end + forward), median and p90 of {args.repeats}")
    print("shared loaded 2-core machine: absolute times are noisy, read the ratios (x = this file / fp32)")
    with tempfile.TemporaryDirectory() as scratch_name:
        for preset in args.models:
            print()
            print(bench_preset(preset, args.bits, Path(scratch_name), args.loads, args.repeats))
    print()
    print("The runtime dequantizes every weight to float32 at load, so per-utterance compute (and the model held "
          "in memory)\nis the fp32 one: the packed file gains file size and bytes read, not latency or memory.")


if __name__ == "__main__":
    main()
