"""Benchmark: fitting k-means codebooks to a Whisper-tiny-sized student (7.6M weights) with quads' sorted 1-D
k-means versus fast-pytorch-kmeans, on the same tensors, in one run; optionally (--hooks) the cost of the
per-step QAT hooks next to a forward+backward pass of a Whisper-tiny-sized encoder.

    .venv/bin/python bench/bench_codebook.py                  # 8, 4 and 2 bits
    .venv/bin/python bench/bench_codebook.py --bits 4 --reference-iterations 25

Prints, per bit width, both wall times, their ratio and the final k-means objective (sum of squared distances
over all tensors; fast-pytorch-kmeans's centroids are scored with nearest-centroid assignment, its best case).
fast-pytorch-kmeans materialises [numel, 2^b] distance and mask matrices, so its iterations are capped
(--reference-iterations, default 25, the same bound as ours). Its tolerance is set to 0 by default so it really
runs them: its own default (1e-4 on the summed squared centroid shift) is absolute, and on weights of scale
~0.05 it stops after 2 iterations with a poor codebook (--reference-tol 1e-4 reproduces that).
"""

from __future__ import annotations

import argparse
import sys
import time
import types

import torch

from quads.compression.codebook import assign_to_codebook, fit_codebook, kmeans_objective


def whisper_tiny_like_shapes(layers: int = 4, width: int = 384, ffn: int = 1536, mels: int = 80) -> list[tuple]:
    """Weight shapes of a Whisper-tiny encoder: conv stem 80->384 k3 and 384->384 k3, then per layer q, k, v, out
    projections and the two feed-forward matrices (7,612,416 weights)."""
    shapes: list[tuple] = [(width, mels, 3), (width, width, 3)]
    for _ in range(layers):
        shapes += [(width, width)] * 4 + [(ffn, width), (width, ffn)]
    return shapes


def student_weights(seed: int, distribution: str) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for shape in whisper_tiny_like_shapes():
        fan_in = shape[1] * (shape[2] if len(shape) == 3 else 1)
        normal = torch.randn(shape, generator=generator)
        if distribution == "laplace":  # heavier tails, closer to trained weights
            uniform = torch.rand(shape, generator=generator) - 0.5
            normal = -torch.sign(uniform) * torch.log1p(-2 * uniform.abs())
        tensors.append(normal / fan_in**0.5)
    return tensors


def import_fast_pytorch_kmeans():
    """fast_pytorch_kmeans imports psutil only to size GPU chunks; on the CPU it is never called, so a stub
    stands in when psutil is not installed."""
    if "psutil" not in sys.modules:
        try:
            import psutil  # noqa: F401
        except ModuleNotFoundError:
            sys.modules["psutil"] = types.ModuleType("psutil")
    from fast_pytorch_kmeans import KMeans

    return KMeans


def time_ours(tensors: list[torch.Tensor], bits: int, iterations: int) -> tuple[float, float]:
    started = time.perf_counter()
    codebooks = [fit_codebook(t, bits, iterations=iterations) for t in tensors]
    elapsed = time.perf_counter() - started
    objective = sum(kmeans_objective(t, c.indices, c.centroids) for t, c in zip(tensors, codebooks, strict=True))
    return elapsed, objective


def time_reference(tensors: list[torch.Tensor], bits: int, iterations: int, tol: float,
                   seed: int) -> tuple[float, float]:
    kmeans_class = import_fast_pytorch_kmeans()
    torch.manual_seed(seed)
    centroids = []
    started = time.perf_counter()
    for tensor in tensors:
        kmeans = kmeans_class(n_clusters=2**bits, mode="euclidean", max_iter=iterations, tol=tol)
        kmeans.fit_predict(tensor.reshape(-1, 1))
        centroids.append(kmeans.centroids.reshape(-1).clone())
    elapsed = time.perf_counter() - started
    objective = sum(kmeans_objective(t, assign_to_codebook(t, c), c) for t, c in zip(tensors, centroids, strict=True))
    return elapsed, objective


def whisper_tiny_like_encoder(layers: int = 4, width: int = 384, ffn: int = 1536, mels: int = 80):
    """A Whisper-tiny-sized encoder (conv stem + 4 transformer layers, 7.6M weights) as a yardstick."""
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv1d(mels, width, 3, padding=1)
            self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
            layer = nn.TransformerEncoderLayer(width, 6, ffn, dropout=0.0, batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

        def forward(self, mel: torch.Tensor) -> torch.Tensor:
            x = nn.functional.gelu(self.conv2(nn.functional.gelu(self.conv1(mel))))
            return self.blocks(x.transpose(1, 2)).mean(1)

    return Encoder()


def time_step_hooks(bits: int, steps: int = 7, batch: int = 8, frames: int = 300) -> dict[str, float]:
    """Median milliseconds per optimizer step spent in each QAT hook for a Whisper-tiny-sized encoder, next to
    one forward+backward pass of that encoder on `batch` utterances of `frames` mel frames (3 s)."""
    from quads.compression.quantize import CodebookQuantizer
    from quads.compression.spec import QuantizationSpec

    model = whisper_tiny_like_encoder()
    quantizer = CodebookQuantizer(model, QuantizationSpec(bits=bits))
    mel = torch.randn(batch, 80, frames)
    samples: dict[str, list[float]] = {name: [] for name in ("swap_in_snapped", "forward_backward", "restore_latent",
                                                              "add_centroid_gradient", "update_centroids")}
    for _ in range(steps):
        for name in samples:
            started = time.perf_counter()
            if name == "forward_backward":
                model(mel).square().mean().backward()
            elif name == "add_centroid_gradient":
                quantizer.add_centroid_gradient(1.0)
            else:
                getattr(quantizer, name)()
            samples[name].append(time.perf_counter() - started)
    return {name: 1000 * sorted(times)[len(times) // 2] for name, times in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4, 2])
    parser.add_argument("--iterations", type=int, default=25, help="our Lloyd iteration bound (default 25)")
    parser.add_argument("--reference-iterations", type=int, default=25, help="fast-pytorch-kmeans max_iter cap")
    parser.add_argument("--reference-tol", type=float, default=0.0, help="fast-pytorch-kmeans tol (its default 1e-4)")
    parser.add_argument("--distribution", choices=["normal", "laplace"], default="normal")
    parser.add_argument("--skip-reference", action="store_true", help="time only ours")
    parser.add_argument("--hooks", action="store_true", help="also time the per-step QAT hooks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both (default 1)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tensors = student_weights(args.seed, args.distribution)
    total = sum(t.numel() for t in tensors)
    print(f"{len(tensors)} tensors, {total:,} weights ({args.distribution}), torch threads {torch.get_num_threads()}, "
          f"ours <= {args.iterations} iterations, fast-pytorch-kmeans {args.reference_iterations} iterations "
          f"(tol {args.reference_tol})")
    print(f"{'bits':>4} {'ours s':>8} {'ref s':>8} {'ref/ours':>9} {'ours objective':>15} {'ref objective':>15} "
          f"{'ref/ours obj':>12}")
    for bits in args.bits:
        ours_time, ours_objective = time_ours(tensors, bits, args.iterations)
        if args.skip_reference:
            print(f"{bits:>4} {ours_time:>8.2f} {'-':>8} {'-':>9} {ours_objective:>15.6g}")
            continue
        ref_time, ref_objective = time_reference(tensors, bits, args.reference_iterations, args.reference_tol,
                                                   args.seed)
        print(f"{bits:>4} {ours_time:>8.2f} {ref_time:>8.2f} {ref_time / ours_time:>9.1f} {ours_objective:>15.6g} "
              f"{ref_objective:>15.6g} {ref_objective / ours_objective:>12.3f}", flush=True)
    if args.hooks:
        for bits in args.bits:
            timings = time_step_hooks(bits)
            hooks = sum(v for k, v in timings.items() if k != "forward_backward")
            print(f"hooks at {bits} bits, median ms per step: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
                  + f"; all hooks {hooks:.1f} = {hooks / timings['forward_backward']:.1%} of forward+backward")


if __name__ == "__main__":
    main()
