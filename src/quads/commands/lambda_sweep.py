"""`quads ablate --lambdas 0,0.01,0.1,1`: does the centroid term act, and which coefficient λ to use?

For every λ (quant.centroid_weight) QUADS and sequential are trained at each bit width and seed, all starting
from the same distilled student of that seed (trained once, in `OUT/shared`, since a float student does not
depend on λ). The table reports, per λ, recipe and width, the validation accuracy (the split to choose λ on),
the test accuracy, and the latent-weight spread around the centroids just before the last hard snap (mean over
tensors of mean (w − c)² / var(w), see `quads.compression.quantize`): if λ acts, the spread falls as λ grows.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from quads.atomic import atomic_write_text
from quads.commands.grid import Cell, run_grid
from quads.commands.report import format_mean_std
from quads.config import load_config
from quads.errors import ConfigError
from quads.training.experiment import write_json

SWEEP_RECIPES = ("quads", "sequential")


def lambda_folder(value: float) -> str:
    return f"lambda-{value:g}"


def run_lambda_sweep(out_dir: str | Path, lambdas: list[float], seeds: list[int],
                     config_path: str | Path | None = None, overrides: list[str] | None = None, *,
                     bits: list[int] | None = None, recipes: list[str] | None = None,
                     progress: bool = True) -> list[dict[str, Any]]:
    """Run the sweep into `out_dir` (one grid per λ in `OUT/lambda-X`), write `lambda.md` and `lambda.json`
    and return one summary entry per (λ, recipe, bits). `recipes`: a subset of SWEEP_RECIPES (default all)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    config = load_config(config_path, overrides)
    unknown = sorted(set(recipes or []) - set(SWEEP_RECIPES))
    if unknown:
        raise ConfigError(f"--recipes {' '.join(unknown)}: the λ sweep runs only {', '.join(SWEEP_RECIPES)} "
                          "(the recipes with a centroid term)")
    chosen = [recipe for recipe in SWEEP_RECIPES if not recipes or recipe in recipes]
    cells = [Cell(recipe, b, seed) for seed in seeds for recipe in chosen for b in (bits or [2, 4])]
    entries: list[dict[str, Any]] = []
    for value in lambdas:
        print(f"λ = quant.centroid_weight = {value:g}", flush=True)
        swept = replace(config, quant=replace(config.quant, centroid_weight=value))
        rows, _ = run_grid(swept, cells, out_dir / lambda_folder(value), progress=progress, latency_samples=0,
                           init_root=out_dir / "shared")
        entries += summarise(value, rows[1:])
    write_json(out_dir / "lambda.json", {"lambdas": lambdas, "seeds": seeds, "entries": entries})
    table = lambda_markdown(entries)
    atomic_write_text(out_dir / "lambda.md", table + "\n")
    print()
    print(table)
    print(f"λ ablation finished in {(time.perf_counter() - started) / 60:.1f} min; results in {out_dir}/lambda.md")
    return entries


def summarise(value: float, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds of valid and test accuracy and of the spread before the last hard snap."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["bits"]), []).append(row)
    entries = []
    for (method, bits), group in groups.items():
        entry: dict[str, Any] = {"lambda": value, "method": method, "bits": bits,
                                 "seeds": [row.get("seed") for row in group]}
        for key, values in (("valid_accuracy", [row["valid_accuracy"] for row in group]),
                            ("accuracy", [row["accuracy"] for row in group]),
                            ("spread", [row["latent_spread"][-1] for row in group if row.get("latent_spread")])):
            entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std(values)
        entries.append(entry)
    return entries


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return mean, std


def lambda_markdown(entries: list[dict[str, Any]]) -> str:
    """The sweep's table: choose λ on the valid column, report the test column."""
    lines = ["Centroid coefficient λ: accuracy (%) mean ± std over seeds, and latent spread before the last hard snap",
             "", "| λ | method | bits | valid acc | test acc | spread (w − c)²/var |", "|---|---|---|---|---|---|"]
    for entry in sorted(entries, key=lambda e: (e["method"], -e["bits"], e["lambda"])):
        spread = "–" if entry["spread_mean"] is None else f"{entry['spread_mean']:.3g}"
        lines.append(f"| {entry['lambda']:g} | {entry['method']} | {entry['bits']} | "
                     f"{format_mean_std(entry['valid_accuracy_mean'], entry['valid_accuracy_std'])} | "
                     f"{format_mean_std(entry['accuracy_mean'], entry['accuracy_std'])} | {spread} |")
    return "\n".join(lines)
