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
from tqdm import tqdm

from quads.audio import SAMPLE_RATE, load_audio
from quads.commands.evaluate import load_evaluation_split
from quads.runtime.model import PackedModel, load
from quads.synth.augment import band_pass, speech_power
from quads.training.experiment import default_corpus_dir

ROOM_NOISE_DB = 40.0  # a lead-in is not digital silence: room noise this far below the clip's speech power
BATCH = 16

Condition = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def noise_below_speech(audio: np.ndarray, db: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """White noise `db` below the clip's speech power (`quads.synth.augment.speech_power`)."""
    return rng.normal(0.0, np.sqrt(speech_power(audio) / 10 ** (db / 10)), size)


def quieter(db: float) -> Condition:
    """The level alone: the same samples scaled down (Whisper's log-mels shift with level)."""
    return lambda audio, rng: audio * 10 ** (-db / 20)


def lead_in(seconds: float, tail: float = 0.0, noise_db: float = ROOM_NOISE_DB) -> Condition:
    """`seconds` of room noise before the clip, `tail` seconds after it (and under it), `noise_db` below its
    speech power."""
    def delayed(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        padded = np.concatenate([np.zeros(int(seconds * SAMPLE_RATE)), audio, np.zeros(int(tail * SAMPLE_RATE))])
        return padded + noise_below_speech(audio, noise_db, padded.size, rng)
    return delayed


def white_noise(snr_db: float) -> Condition:
    return lambda audio, rng: audio + noise_below_speech(audio, snr_db, audio.size, rng)


CONDITIONS: dict[str, Condition] = {
    "as recorded": lambda audio, rng: audio,
    "12 dB quieter": quieter(12), "20 dB quieter": quieter(20), "30 dB quieter": quieter(30),
    "0.75 s lead-in": lead_in(0.75), "1.5 s lead-in": lead_in(1.5), "3 s lead-in": lead_in(3.0),
    "1.5 s lead-in, 3 s tail": lead_in(1.5, tail=3.0),
    "3 s lead-in, 1 s tail, noise 25 dB under": lead_in(3.0, tail=1.0, noise_db=25.0),
    "phone band (300-3400 Hz)": lambda audio, rng: band_pass(audio, 300.0, 3400.0, SAMPLE_RATE),
    "white noise, 10 dB SNR": white_noise(10), "white noise, 5 dB SNR": white_noise(5),
}


def accuracy(model: PackedModel, clips: list[np.ndarray], truth: list[str]) -> float:
    predicted = []
    for start in range(0, len(clips), BATCH):
        predicted += [p.label for p in model.predict_waveforms(clips[start:start + BATCH], top_k=1)]
    return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="packed model files (quads export)")
    parser.add_argument("--data", type=Path, help="corpus folder or manifest CSV (default: the built-in corpus)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--as-recorded", action="store_true", help="also score each file on every clip whole "
                        "(`score_window = False`: no pause trimmed), in a column of its own")
    args = parser.parse_args()
    started = time.perf_counter()
    data = args.data or default_corpus_dir()
    models = {str(path): load(path) for path in args.models}
    if args.as_recorded:
        for path in args.models:
            models[f"{path}, as recorded"] = whole = load(path)
            whole.score_window = False
    for model in models.values():  # every file must know every label of the split (a clear error otherwise)
        utterances, _ = load_evaluation_split(data, args.split, model.labels)
    clips = [load_audio(u.path, SAMPLE_RATE) for u in utterances]  # read once, transformed once per condition
    truth = [u.label for u in utterances]
    columns: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for condition in tqdm(CONDITIONS.values(), desc="conditions", unit="condition"):
            rng = np.random.default_rng(0)
            transformed = [np.clip(condition(clip.astype(np.float64), rng), -1.0, 1.0).astype(np.float32)
                           for clip in clips]
            for name, model in models.items():
                columns[name].append(100 * accuracy(model, transformed, truth))
    lines = [f"{data} ({args.split}, {len(truth)} clips): accuracy (%) per model file", "",
             "| condition | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for row, condition in enumerate(CONDITIONS):
        lines.append(f"| {condition} | " + " | ".join(f"{columns[name][row]:.1f}" for name in models) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
