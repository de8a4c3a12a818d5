"""A grid of compression runs (recipe x bits x seed): train, export, evaluate, and collect one results row each.

`quads demo` and `quads ablate` are grids of different sizes. Cells share one loaded corpus and one pre-tuned
teacher, run in an order where the distilled student precedes the recipes that start from it, and each
finished cell leaves `row.json` in its folder, so an interrupted grid resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quads.compress import Prepared, compress, prepare
from quads.config import RunConfig
from quads.evaluate import evaluate_model_file, score_predictions
from quads.experiment import cache_root, default_corpus_dir, write_json
from quads.export import export_run
from quads.pretune import pretune_fingerprint
from quads.recipes import plan
from quads.train import predict_logits

logger = logging.getLogger(__name__)

METHOD_NAMES = {"fp32": "student fp32", "distill": "student + distill", "ptq": "PTQ", "qat": "QAT",
                "sequential": "sequential", "quads": "QUADS"}


@dataclass(frozen=True)
class Cell:
    recipe: str
    bits: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.recipe}-{self.bits}b-s{self.seed}"


def ordered(cells: list[Cell]) -> list[Cell]:
    """The fp32 students first (the quantizing recipes start from them), then the rest in the given order."""
    return sorted(cells, key=lambda cell: (cell.seed, cell.recipe not in ("fp32", "distill")))


def teacher_folder(config: RunConfig, prepared_corpus) -> Path:
    """Pre-tuned teachers live in the cache, keyed by their settings and corpus, so every grid reuses them."""
    return cache_root(config.data) / "teachers" / pretune_fingerprint(config, prepared_corpus)


def teacher_row(prepared: Prepared) -> dict[str, Any]:
    """The pre-tuned teacher's row: accuracy and macro-F1 on the test split, its parameters; no packed file."""
    test = prepared.teacher_frames.sets["test"]
    predicted = predict_logits(prepared.teacher.head, test).argmax(-1).tolist()
    accuracy, f1, *_ = score_predictions(test.labels.tolist(), predicted, prepared.teacher.labels)
    return {"method": "teacher", "bits": 32, "params": prepared.teacher.num_parameters, "size_bytes": None,
            "theoretical_bytes": None, "gmacs": None, "gmacs_30s": None, "accuracy": accuracy, "f1": f1,
            "model_file": None, "teacher": prepared.teacher.spec}


def run_grid(config: RunConfig, cells: list[Cell], out_dir: str | Path, *, progress: bool = True,
             latency_samples: int = 20) -> tuple[list[dict[str, Any]], Prepared]:
    """Run every cell not yet finished in `out_dir` and return all rows (teacher first) plus the shared data."""
    out_dir = Path(out_dir)
    prepared = prepare(config, with_teacher=False, progress=progress)
    teacher_dir = teacher_folder(config, prepared.corpus)
    prepare(config, with_teacher=True, teacher_dir=teacher_dir, progress=progress, prepared=prepared)
    corpus_path = Path(config.data.path).expanduser() if config.data.path else default_corpus_dir(config.data)
    rows = [teacher_row(prepared)]
    features_cache = cache_root(config.data) / "features"
    for index, cell in enumerate(ordered(cells), start=1):
        cell_dir = out_dir / "runs" / cell.name
        row_file = cell_dir / "row.json"
        if row_file.exists():
            rows.append(json.loads(row_file.read_text(encoding="utf-8")))
            continue
        started = time.perf_counter()
        print(f"[{index}/{len(cells)}] {METHOD_NAMES[cell.recipe]} at {cell.bits} bits, seed {cell.seed}", flush=True)
        cell_config = replace(config, seed=cell.seed)
        source = plan(cell.recipe, cell_config, cell.bits).start_from or "distill"
        init = out_dir / "runs" / Cell(source, 32, cell.seed).name
        result = compress(cell_config, cell.recipe, cell.bits, cell_dir, teacher_dir=teacher_dir, init_dir=init,
                          resume=True, progress=progress, prepared=prepared)
        model_file = out_dir / "models" / f"{cell.name}.quads"
        export_run(cell_dir, model_file)
        evaluation = evaluate_model_file(model_file, corpus_path, "test", cache_dir=features_cache,
                                         latency_samples=latency_samples, progress=False)
        row = evaluation.to_row(METHOD_NAMES[cell.recipe], seed=cell.seed)
        row.update(recipe=cell.recipe, valid_accuracy=result.valid_accuracy,
                   latency_ms_median=evaluation.latency_ms_median, train_seconds=result.summary["wall_seconds"],
                   epochs=result.summary["epochs"])
        write_json(row_file, row)
        rows.append(row)
        print(f"    test accuracy {row['accuracy']:.4f}, F1 {row['f1']:.4f}, {row['size_bytes']:,} bytes "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    return rows, prepared
