"""GMACs of a Whisper-tiny-sized encoder at the utterance's real length versus Whisper's 30 s padding.

    .venv/bin/python bench/bench_macs.py [--seconds 1 2 2.2 2.3 3 5] [--repeats 5] [--no-time]

Stock Whisper pads every input to 30 s (3000 log-mel frames); quads' encoders run on the real length. For
spoken commands (FSC's mean utterance is ~2.3 s, the built-in synthetic corpus's ~2.2 s) that padding is
nearly all of the compute. MACs are counted with `quads.models.gmacs_at_length` (matmuls, convolutions and
attention matmuls; 1 MAC = 2 FLOPs), which is deterministic. Rows: the `whisper-tiny-like` student (31 labels,
80 mels), the stock Whisper-tiny encoder architecture (`WhisperTeacherEncoder.from_size("tiny")`, random
weights: MACs do not depend on them; its parameter count includes the 576K position table) and the
`conv-200k` student. Unless `--no-time`, it also measures the
wall time of one whisper-tiny-like forward pass (batch 1, 1 torch thread, median of `--repeats`) at each
length, to show that the MAC ratio is a time ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from quads.models import build_student, gmacs_at_length

FRAMES_PER_SECOND = 100
PADDED_FRAMES = 3000  # Whisper's 30 s window
N_MELS = 80
NUM_LABELS = 31  # FSC's intents


def parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@torch.no_grad()
def median_forward_seconds(model: torch.nn.Module, frames: int, repeats: int) -> float:
    model.eval()
    features = torch.randn(1, N_MELS, frames)
    mask = torch.ones(1, frames, dtype=torch.bool)
    model(features, mask)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model(features, mask)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[1, 2, 2.2, 2.3, 3, 5],
                        help="real utterance lengths to compare with 30 s (default: 1 2 2.2 2.3 3 5)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per length (default 5)")
    parser.add_argument("--no-time", action="store_true", help="count MACs only, do not time forward passes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    from quads.models import WhisperTeacherEncoder, build_teacher

    models = {
        "whisper-tiny-like+head": build_student("whisper-tiny-like", num_labels=NUM_LABELS, n_mels=N_MELS),
        "stock whisper-tiny enc": WhisperTeacherEncoder.from_size("tiny"),
        "conv-200k+head": build_student("conv-200k", num_labels=NUM_LABELS, n_mels=N_MELS),
    }
    lengths = [*(round(seconds * FRAMES_PER_SECOND) for seconds in args.seconds), PADDED_FRAMES]
    gmacs = {name: {frames: gmacs_at_length(model, N_MELS, frames) for frames in lengths}
             for name, model in models.items()}
    timed = {} if args.no_time else {
        frames: median_forward_seconds(models["whisper-tiny-like+head"], frames, args.repeats) for frames in lengths}

    print("Parameters (for scale):")
    for name, model in models.items():
        print(f"  {name:<24} {parameters(model):>12,}")
    teacher = build_teacher("speech_embedding")
    print(f"  {'speech_embedding teacher':<24} {teacher.num_parameters():>12,}  (ONNX initializers; frozen)")
    print()
    header = f"{'length':>8} {'frames':>6} | " + " | ".join(f"{name:>{len(name)}}" for name in models)
    header += f" | {'30 s / real (wtl)':>17}"
    if timed:
        header += f" | {'wtl fwd ms':>10} | {'time 30 s / real':>16}"
    print("GMACs per utterance (batch 1); wtl = whisper-tiny-like")
    print(header)
    print("-" * len(header))
    padded = gmacs["whisper-tiny-like+head"][PADDED_FRAMES]
    for frames in lengths:
        row = f"{frames / FRAMES_PER_SECOND:>7.1f}s {frames:>6} | "
        row += " | ".join(f"{gmacs[name][frames]:>{len(name)}.4f}" for name in models)
        row += f" | {padded / gmacs['whisper-tiny-like+head'][frames]:>16.1f}x"
        if timed:
            row += f" | {1000 * timed[frames]:>10.1f} | {timed[PADDED_FRAMES] / timed[frames]:>15.1f}x"
        print(row)
    if timed:
        print(f"(wall times: median of {args.repeats}, 1 torch thread, on a shared loaded 2-core machine: noisy; "
              "MAC counts are exact)")


if __name__ == "__main__":
    main()
