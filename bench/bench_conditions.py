"""Recording conditions: how a model file's accuracy moves when the same test clips arrive quieter, after a long
lead-in, through a phone band or in noise.

Real recordings differ from the synthetic corpus in ways a test split drawn from the same synthesiser does not
show. Each condition transforms every clip of the split the same way (seeded, so reruns match) and the packed
model file is scored through the runtime (`quads.runtime.model.load`, waveform in, intent out):

    .venv/bin/python bench/bench_conditions.py results/demo/models/quads-4b-s0.quads other.quads \\
        --out runs/conditions.md

`--data` is a corpus folder or manifest CSV (default: the built-in corpus); `--split` as in `quads eval`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import signal
from tqdm import tqdm

from quads.audio import load_audio
from quads.commands.evaluate import load_evaluation_split
from quads.runtime.model import load
from quads.synth.augment import speech_power
from quads.training.experiment import default_corpus_dir

SAMPLE_RATE = 16000
ROOM_NOISE_DB = 40.0  # a lead-in is not digital silence: room noise this far below the clip's speech power
BATCH = 16

Condition = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def quieter(db: float) -> Condition:
    """The level alone: the same samples scaled down (Whisper's log-mels shift with level)."""
    return lambda audio, rng: audio * 10 ** (-db / 20)


def lead_in(seconds: float) -> Condition:
    """`seconds` of room noise before the clip (and under it), ROOM_NOISE_DB below its speech power."""
    def delayed(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        padded = np.concatenate([np.zeros(int(seconds * SAMPLE_RATE)), audio])
        return padded + rng.normal(0.0, np.sqrt(speech_power(audio) / 10 ** (ROOM_NOISE_DB / 10)), padded.size)
    return delayed


def phone_band(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sections = signal.butter(4, [300.0, 3400.0], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(sections, audio)


def white_noise(snr_db: float) -> Condition:
    def noisy(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scale = np.sqrt(speech_power(audio) / 10 ** (snr_db / 10))
        return audio + rng.normal(0.0, scale, audio.size)
    return noisy


CONDITIONS: dict[str, Condition] = {
    "as recorded": lambda audio, rng: audio,
    "12 dB quieter": quieter(12), "20 dB quieter": quieter(20), "30 dB quieter": quieter(30),
    "0.75 s lead-in": lead_in(0.75), "1.5 s lead-in": lead_in(1.5),
    "phone band (300-3400 Hz)": phone_band,
    "white noise, 10 dB SNR": white_noise(10), "white noise, 5 dB SNR": white_noise(5),
}


def accuracy(model, clips: list[np.ndarray], truth: list[str], condition: Condition) -> float:
    rng = np.random.default_rng(0)
    transformed = [np.clip(condition(clip.astype(np.float64), rng), -1.0, 1.0).astype(np.float32) for clip in clips]
    predicted = []
    for start in range(0, len(transformed), BATCH):
        predicted += [p.label for p in model.predict_waveforms(transformed[start:start + BATCH], top_k=1)]
    return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="packed model files (quads export)")
    parser.add_argument("--data", type=Path, help="corpus folder or manifest CSV (default: the built-in corpus)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    started = time.perf_counter()
    data = args.data or default_corpus_dir()
    columns: dict[str, list[float]] = {}
    for path in args.models:
        model = load(path)
        utterances, _ = load_evaluation_split(data, args.split, model.labels)
        clips = [load_audio(u.path, SAMPLE_RATE) for u in utterances]
        truth = [u.label for u in utterances]
        with torch.inference_mode():
            columns[str(path)] = [100 * accuracy(model, clips, truth, condition)
                                  for condition in tqdm(CONDITIONS.values(), desc=path.name, unit="condition")]
    names = list(columns)
    lines = [f"{data} ({args.split}, {len(truth)} clips): accuracy (%) per model file", "",
             "| condition | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row, condition in enumerate(CONDITIONS):
        lines.append(f"| {condition} | " + " | ".join(f"{columns[name][row]:.1f}" for name in names) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
