"""A grid of compression runs (recipe x bits x seed): train, export, evaluate, and collect one results row each.

`quads demo` and `quads ablate` are grids of different sizes. Cells share one loaded corpus and one pre-tuned
teacher, run in an order where the distilled student precedes the recipes that start from it, and each
finished cell leaves `row.json` in its folder, so an interrupted grid resumes where it stopped. A row, like a
run folder, is reused only when its fingerprint (settings, corpus, teacher weights) matches; otherwise the cell
is trained again, with a log line saying why.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quads.cache_dir import cache_root
from quads.commands.compress import FLOAT_RECIPES, Prepared, compress, prepare, run_fingerprint, stale_reason, with_bits
from quads.commands.evaluate import evaluate_model_file, score_predictions
from quads.commands.export import export_run
from quads.config import RunConfig
from quads.errors import ConfigError
from quads.training.experiment import default_corpus_dir, write_json
from quads.training.inference import predict_logits
from quads.training.pretune import pretune_fingerprint
from quads.training.recipes import equal_budget, plan

logger = logging.getLogger(__name__)

METHOD_NAMES = {"fp32": "student fp32", "distill": "student + distill", "ptq": "PTQ", "qat": "QAT",
                "sequential": "sequential", "quads": "QUADS"}


EQUAL_BUDGET = " (equal budget)"
EQUAL_BUDGET_DISTILL = METHOD_NAMES["distill"] + EQUAL_BUDGET  # the control QUADS is held against


@dataclass(frozen=True)
class Cell:
    """One run of a grid; `equal_budget` (fp32 and distill only) trains as many epochs as a quantizing recipe."""

    recipe: str
    bits: int
    seed: int
    equal_budget: bool = False

    def __post_init__(self) -> None:
        if self.equal_budget and self.recipe not in FLOAT_RECIPES:
            raise ConfigError(f"equal-budget cells are fp32 or distill students, not '{self.recipe}'")

    @property
    def name(self) -> str:
        return f"{self.recipe}{'-eb' if self.equal_budget else ''}-{self.bits}b-s{self.seed}"

    @property
    def method(self) -> str:
        return METHOD_NAMES[self.recipe] + (EQUAL_BUDGET if self.equal_budget else "")

    def config(self, base: RunConfig) -> RunConfig:
        """The cell's settings: the base with its seed, bit width and (equal budget) epochs."""
        config = with_bits(replace(base, seed=self.seed), self.bits)
        return equal_budget(config) if self.equal_budget else config


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
             latency_samples: int = 20, init_root: str | Path | None = None) -> tuple[list[dict[str, Any]], Prepared]:
    """Run every cell not yet finished in `out_dir` and return all rows (teacher first) plus the shared data.

    The fp32 students the quantizing cells start from live in `init_root` (default `out_dir/runs`), so grids
    that differ only in quantization settings (e.g. the lambda ablation) can share them."""
    out_dir = Path(out_dir)
    init_root = Path(init_root) if init_root else out_dir / "runs"
    prepared = prepare(config, with_teacher=False, progress=progress)
    teacher_dir = teacher_folder(config, prepared.corpus)
    prepare(config, with_teacher=True, teacher_dir=teacher_dir, progress=progress, prepared=prepared)
    corpus_path = Path(config.data.path).expanduser() if config.data.path else default_corpus_dir(config.data)
    rows = [teacher_row(prepared)]
    features_cache = cache_root(config.data) / "features"
    for index, cell in enumerate(ordered(cells), start=1):
        cell_config = cell.config(config)
        cell_dir = (init_root if cell.bits == 32 and not cell.equal_budget and cell.recipe in FLOAT_RECIPES
                    else out_dir / "runs") / cell.name
        fingerprint = run_fingerprint(cell_config, cell.recipe, prepared)
        row_file = cell_dir / "row.json"
        row = json.loads(row_file.read_text(encoding="utf-8")) if row_file.exists() else None
        if row is not None and row.get("fingerprint") == fingerprint:
            rows.append(row)
            continue
        reason = stale_reason(cell_dir, fingerprint, cell_config.to_dict()) or (
            None if row is None else f"{row_file} was made with other settings, corpus or teacher weights")
        if reason:
            logger.warning("%s: not reusing it: %s; training it again", cell.name, reason)
        started = time.perf_counter()
        print(f"[{index}/{len(cells)}] {cell.method} at {cell.bits} bits, seed {cell.seed}", flush=True)
        source = plan(cell.recipe, cell_config, cell.bits).start_from or "distill"
        init = init_root / Cell(source, 32, cell.seed).name
        result = compress(cell_config, cell.recipe, cell_dir, teacher_dir=teacher_dir, init_dir=init,
                          resume=reason is None, progress=progress, prepared=prepared)
        model_file = out_dir / "models" / f"{cell.name}.quads"
        export_run(cell_dir, model_file)
        evaluation = evaluate_model_file(model_file, corpus_path, "test", cache_dir=features_cache,
                                         latency_samples=latency_samples, progress=False)
        row = evaluation.to_row(cell.method, seed=cell.seed)
        row.update(recipe=cell.recipe, fingerprint=fingerprint, valid_accuracy=result.valid_accuracy,
                   latency_ms_median=evaluation.latency_ms_median, train_seconds=result.summary["wall_seconds"],
                   epochs=result.summary["epochs"], latent_spread=snap_spreads(result.summary["history"]))
        write_json(row_file, row)
        rows.append(row)
        print(f"    test accuracy {row['accuracy']:.4f}, F1 {row['f1']:.4f}, {row['size_bytes']:,} bytes "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    return rows, prepared


def snap_spreads(history: list[dict[str, Any]]) -> list[float]:
    """The latent-weight spread at the last epoch of each quantize stage, i.e. just before each hard snap."""
    spreads: list[float] = []
    for position, row in enumerate(history):
        following = history[position + 1] if position + 1 < len(history) else None
        if "latent_spread" in row and (following is None or following["stage_index"] != row["stage_index"]):
            spreads.append(row["latent_spread"])
    return spreads
