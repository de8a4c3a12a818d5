"""The documents the code and README cite exist, and docs/METHOD.md quotes the defaults the code has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from quads.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"(?:docs/)?[A-Z][A-Z-]*\.md")


def test_every_cited_markdown_file_is_in_the_repository():
    sources = [ROOT / "README.md", *sorted((ROOT / "src").rglob("*.py"))]
    missing = set()
    for source in sources:
        for name in CITED.findall(source.read_text(encoding="utf-8")):
            if name == "README.md":
                continue
            if not ((ROOT / name).is_file() or (ROOT / "docs" / name).is_file()):
                missing.add(f"{source.relative_to(ROOT)} cites {name}")
    assert not missing, sorted(missing)


def test_method_quotes_the_configured_defaults():
    method = (ROOT / "docs" / "METHOD.md").read_text(encoding="utf-8")
    config = RunConfig()
    assert f"α = {config.distill.alpha}" in method
    assert f"γ = {config.quant.gamma}, λ = {config.quant.centroid_weight:g}" in method
    assert json.dumps(config.quant.min_bits) in method
    assert f"Default `{config.student.encoder}`" in method
    assert f"`quant.epochs = {config.quant.epochs}`" in method and f"`optim.epochs = {config.optim.epochs}`" in method
    assert f"`quant.low_bit_epochs = {config.quant.low_bit_epochs}`" in method
    assert f"`quant.weights_per_centroid`, default {config.quant.weights_per_centroid}" in method
