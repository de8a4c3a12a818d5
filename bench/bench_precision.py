"""Training-step time of the default student in float32 against bf16 autocast (`optim.precision`).

    .venv/bin/python bench/bench_precision.py [--student whisper-tiny.en-3l] [--batch 16] [--frames 300]
                                              [--repeats 10]

Nothing is read from disk but the student's pretrained weights: a batch of random log-mels (`--frames` at
100 frames/s: 3 s by default, the built-in corpus's longer clips) goes forward through the student's encoder
and a linear intent head, an L1 to random teacher frames plus a cross-entropy goes backward, and AdamW steps,
as `quads.training.loop.fit` does; the forward runs inside `quads.training.precision.forward_precision`.
Steps alternate between the two precisions so that background load hits both alike.

Printed: whether this CPU multiplies bf16 natively (what `optim.precision: auto` follows), the median and p90
seconds per step of each precision, the fp32 / bf16 ratio, and the relative L2 difference of the encoder's
frames between the two precisions on the same weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from quads.models.registry import PRETRAINED_STUDENTS
from quads.models.whisper import whisper_student
from quads.training.precision import forward_precision, native_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="whisper-tiny.en-3l", choices=sorted(PRETRAINED_STUDENTS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(0)
    checkpoint, cut = PRETRAINED_STUDENTS[args.student]
    encoder = whisper_student(checkpoint, **cut)
    head = nn.Linear(encoder.embed_dim, 31)
    model = nn.ModuleDict({"encoder": encoder, "head": head})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    inputs = torch.randn(args.batch, 80, args.frames)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
    labels = torch.randint(0, 31, (args.batch,))
    device = inputs.device

    def step(precision: str) -> float:
        started = time.perf_counter()
        with forward_precision(precision, device):
            frames, _ = encoder(inputs, mask)
            logits = head(frames.mean(1))
        frames, logits = frames.float(), logits.float()
        loss = frames.abs().mean() + nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    print(f"student {args.student}, batch {args.batch} x {args.frames} frames, {torch.get_num_threads()} threads; "
          f"native bf16 on this CPU (AMX tiles): {native_bf16(device)}")
    with torch.no_grad():
        reference, _ = encoder(inputs, mask)
        with forward_precision("bf16", device):
            lowered, _ = encoder(inputs, mask)
    difference = float((lowered.float() - reference).norm() / reference.norm())
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for precision in times:  # warm-up: kernels chosen, memory allocated
        step(precision)
    for _ in range(args.repeats):
        for precision in times:
            times[precision].append(step(precision))
    for precision, seconds in times.items():
        ordered = sorted(seconds)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        print(f"{precision}: {statistics.median(seconds):.3f} s per step (p90 {p90:.3f})")
    ratio = statistics.median(times["fp32"]) / statistics.median(times["bf16"])
    print(f"fp32 / bf16 step time: {ratio:.2f}x; encoder frames, bf16 vs fp32: relative L2 difference "
          f"{difference:.4f}")


if __name__ == "__main__":
    main()
