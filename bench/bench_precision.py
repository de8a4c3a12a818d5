"""Training-step time of the default student in float32 against bf16 autocast (`optim.precision`).

    .venv/bin/python bench/bench_precision.py [--student whisper-tiny.en-3l] [--batch 16] [--steps 40]
                                              [--min-frames 150] [--max-frames 450]

Nothing is read from disk but the student's pretrained weights. Each step draws a batch length between
`--min-frames` and `--max-frames` log-mel frames (1.5-4.5 s at 100 frames/s, as the built-in corpus's length
buckets), sends random log-mels forward through the student's encoder and a linear intent head, an L1 to the
frames plus a cross-entropy backward, and steps AdamW, as `quads.training.loop.fit` does, in three ways:
float32; bf16 autocast with every batch at its own length; bf16 with each batch padded to a multiple of
`LENGTH_MULTIPLE` frames (`shape_bucketed`: what `fit` does in bf16). The three see the same lengths, step by
step in turn, so that background load hits them alike; the first step of each is a warm-up.

Printed: whether this CPU multiplies bf16 natively (what `optim.precision: auto` follows), the median and p90
seconds per step of each way, their ratios to float32, and the relative L2 difference of the encoder's frames
between bf16 and float32 on the same weights.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from torch import nn

from quads.models.registry import PRETRAINED_STUDENTS
from quads.models.whisper import whisper_student
from quads.training.batches import Batch
from quads.training.precision import forward_precision, native_bf16, shape_bucketed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="whisper-tiny.en-3l", choices=sorted(PRETRAINED_STUDENTS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--min-frames", type=int, default=150)
    parser.add_argument("--max-frames", type=int, default=450)
    args = parser.parse_args()

    torch.manual_seed(0)
    checkpoint, cut = PRETRAINED_STUDENTS[args.student]
    encoder = whisper_student(checkpoint, **cut)
    head = nn.Linear(encoder.embed_dim, 31)
    model = nn.ModuleDict({"encoder": encoder, "head": head})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    labels = torch.randint(0, 31, (args.batch,))

    def batch_of(frames: int) -> Batch:
        mask = torch.ones(args.batch, frames, dtype=torch.bool)
        mask[args.batch // 2 :, frames * 3 // 4 :] = False  # half the batch shorter, as in a length bucket
        return Batch(torch.randn(args.batch, 80, frames) * mask[:, None], mask, labels, torch.arange(args.batch))

    def step(way: str, frames: int) -> float:
        batch = batch_of(frames)
        started = time.perf_counter()
        precision = "fp32" if way == "fp32" else "bf16"
        if way == "bf16, bucketed":
            batch = shape_bucketed(batch, time_axis=2, max_frames=encoder.max_input_frames)
        with forward_precision(precision, batch.inputs.device):
            frames_out, _ = encoder(batch.inputs, batch.mask)
            logits = head(frames_out.mean(1))
        frames_out, logits = frames_out.float(), logits.float()
        loss = frames_out.abs().mean() + nn.functional.cross_entropy(logits, batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    print(f"student {args.student}, batch {args.batch} x {args.min_frames}-{args.max_frames} frames, "
          f"{torch.get_num_threads()} threads; native bf16 on this CPU (AMX tiles): {native_bf16(torch.device('cpu'))}")
    probe = batch_of(args.max_frames)
    with torch.no_grad():
        reference, _ = encoder(probe.inputs, probe.mask)
        with forward_precision("bf16", probe.inputs.device):
            lowered, _ = encoder(probe.inputs, probe.mask)
    difference = float((lowered.float() - reference).norm() / reference.norm())
    lengths = random.Random(0).choices(range(args.min_frames, args.max_frames + 1), k=args.steps + 1)
    times: dict[str, list[float]] = {"fp32": [], "bf16": [], "bf16, bucketed": []}
    for index, frames in enumerate(lengths):
        for way in times:
            seconds = step(way, frames)
            if index > 0:  # the first step of each way is a warm-up
                times[way].append(seconds)
    fp32 = statistics.median(times["fp32"])
    for way, seconds in times.items():
        ordered = sorted(seconds)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        median = statistics.median(seconds)
        print(f"{way:>15}: {median:.3f} s per step (p90 {p90:.3f}), float32 / this {fp32 / median:.2f}x")
    print(f"encoder frames, bf16 vs float32: relative L2 difference {difference:.4f}")


if __name__ == "__main__":
    main()
