"""Grid cells: equal-budget controls, the bit width each cell runs at, and fingerprints that refuse stale reuse."""

from types import SimpleNamespace

import pytest

from quads.commands.ablate import ablation_cells
from quads.commands.compress import effective_config, run_fingerprint, stale_reason, with_bits
from quads.commands.demo import DEMO_CELLS, EQUAL_BUDGET_CELLS
from quads.commands.grid import Cell, snap_spreads
from quads.config import changed_settings, load_config
from quads.errors import ConfigError
from quads.training.checkpoints import save_checkpoint
from quads.training.recipes import equal_budget, plan, quantizing_epochs


def fake_prepared(teacher: str | None = "head-1"):
    labels = SimpleNamespace(labels=[f"intent-{i}" for i in range(31)])
    return SimpleNamespace(corpus=SimpleNamespace(splits={}, label_map=labels),
                           teacher=None if teacher is None else SimpleNamespace(fingerprint=teacher))


def test_equal_budget_students_train_as_many_epochs_as_the_quantizing_recipes_in_one_stage():
    config = load_config(None, ["optim.epochs=20", "quant.epochs=8"])
    assert quantizing_epochs(config) == 28
    control = equal_budget(config)
    stages = plan("distill", control, 32).stages
    assert [(stage.name, stage.epochs) for stage in stages] == [("distill", 28)]
    quads = plan("quads", config, 4)
    assert config.optim.epochs + sum(stage.epochs for stage in quads.stages) == 28
    scratch = load_config(None, ["optim.epochs=20", "quant.init=scratch"])
    assert quantizing_epochs(scratch) == 20


def test_equal_budget_cells_are_separate_rows_and_only_for_float_students():
    cell = Cell("distill", 32, 1, equal_budget=True)
    assert cell.method == "student + distill (equal budget)" and cell.name == "distill-eb-32b-s1"
    assert cell.config(load_config(None, ["optim.epochs=5", "quant.epochs=3"])).optim.epochs == 8
    with pytest.raises(ConfigError, match="quads"):
        Cell("quads", 4, 0, equal_budget=True)
    cells = ablation_cells([0, 1])
    assert {c.method for c in cells if c.equal_budget} == {"student fp32 (equal budget)",
                                                           "student + distill (equal budget)"}
    assert not any(c.equal_budget for c in ablation_cells([0], equal_budget=False))
    assert not any(c.equal_budget for c in ablation_cells([0], bits=[4]))
    assert all(recipe != "fp32" for recipe, _ in DEMO_CELLS) and ("distill", 32) in EQUAL_BUDGET_CELLS


def test_each_cell_runs_at_its_own_width_and_float_recipes_at_32_bits():
    config = load_config(None)
    assert Cell("quads", 2, 0).config(config).quant.bits == 2
    assert effective_config(with_bits(config, 4), "fp32").quant.bits == 32
    assert effective_config(with_bits(config, 16), "distill").quant.bits == 16  # a float16 cast is honest
    assert effective_config(with_bits(config, 4), "quads").quant.bits == 4
    with pytest.raises(ConfigError):
        with_bits(config, 5)


def test_fingerprints_follow_what_changes_a_result():
    config = load_config(None)
    prepared = fake_prepared()
    other_lambda = load_config(None, ["quant.centroid_weight=0.1"])
    # a float student does not depend on lambda or the width asked for; QUADS does
    assert run_fingerprint(config, "distill", prepared) == run_fingerprint(other_lambda, "distill", prepared)
    assert run_fingerprint(with_bits(config, 2), "distill", prepared) == run_fingerprint(config, "distill", prepared)
    assert run_fingerprint(config, "quads", prepared) != run_fingerprint(other_lambda, "quads", prepared)
    assert run_fingerprint(with_bits(config, 2), "quads", prepared) != run_fingerprint(config, "quads", prepared)
    # another pre-tuned teacher (settings, corpus or weights) or none at all: another student
    assert run_fingerprint(config, "distill", fake_prepared("head-2")) != run_fingerprint(config, "distill", prepared)
    assert run_fingerprint(config, "distill", fake_prepared(None)) != run_fingerprint(config, "distill", prepared)


def test_quantized_fingerprints_follow_the_resolved_widths_not_the_patterns():
    prepared = fake_prepared()
    config = load_config(None, ['quant.min_bits={"*layers.0.self_attn.*_proj.weight": 4}'])
    floored = load_config(None, ['quant.min_bits={"*self_attn.*_proj.weight": 4}'])
    # every layer's attention floored at 4 bits, not only layer 0's: the same 4-bit run, another 2-bit one
    assert run_fingerprint(floored, "quads", prepared) == run_fingerprint(config, "quads", prepared)
    assert run_fingerprint(with_bits(floored, 2), "quads", prepared) != run_fingerprint(with_bits(config, 2), "quads",
                                                                                        prepared)
    assert run_fingerprint(with_bits(floored, 2), "ptq", prepared) != run_fingerprint(with_bits(config, 2), "ptq",
                                                                                      prepared)
    # the same widths written as other patterns: the same run
    spelled_out = load_config(None, ["quant.min_bits={}", 'quant.per_layer={"*layers.0.self_attn.*_proj.weight": 4}'])
    assert run_fingerprint(with_bits(spelled_out, 2), "quads", prepared) == run_fingerprint(with_bits(config, 2),
                                                                                            "quads", prepared)


def test_fingerprint_follows_the_default_schedule_even_when_the_config_does_not_change(monkeypatch):
    import quads.training.recipes as recipes

    config, prepared = load_config(None), fake_prepared()
    before = run_fingerprint(config, "quads", prepared)
    ptq = run_fingerprint(config, "ptq", prepared)
    monkeypatch.setattr(recipes, "pretrained_schedule", lambda epochs: [("distill", 1), ("quantize", epochs - 1)])
    assert run_fingerprint(config, "quads", prepared) != before  # a code change of the default retrains
    assert run_fingerprint(config, "ptq", prepared) == ptq  # post-training k-means trains no stages


def test_a_run_folder_is_stale_when_its_fingerprint_differs_and_the_reason_names_the_keys(tmp_path):
    assert stale_reason(tmp_path, "a") is None  # nothing there: nothing to reuse, nothing stale
    saved = load_config(None).to_dict()
    save_checkpoint(tmp_path / "student.pt", {"fingerprint": "a", "settings": saved})
    assert stale_reason(tmp_path, "a") is None
    now = load_config(None, ["quant.gamma=0.25"]).to_dict()
    assert "quant.gamma: 0.9 there, 0.25 here" in stale_reason(tmp_path, "b", now)
    assert changed_settings(saved, saved) == [] and changed_settings(None, saved) == []


def test_snap_spreads_are_read_at_the_last_epoch_of_each_quantize_stage():
    history = [{"stage_index": 0}, {"stage_index": 1, "latent_spread": 0.3}, {"stage_index": 1, "latent_spread": 0.2},
               {"stage_index": 2}, {"stage_index": 3, "latent_spread": 0.1}]
    assert snap_spreads(history) == [0.2, 0.1]


def test_the_lambda_table_averages_seeds_and_reports_the_spread_before_the_last_snap():
    from quads.commands.lambda_sweep import lambda_markdown, summarise

    rows = [{"method": "QUADS", "bits": 2, "seed": seed, "valid_accuracy": valid, "accuracy": test,
             "latent_spread": [0.5, spread]} for seed, valid, test, spread in ((0, 0.6, 0.5, 0.1), (1, 0.8, 0.7, 0.3))]
    (entry,) = summarise(0.1, rows)
    assert entry["lambda"] == 0.1 and entry["seeds"] == [0, 1]
    assert entry["valid_accuracy_mean"] == pytest.approx(0.7) and entry["spread_mean"] == pytest.approx(0.2)
    assert "| 0.1 | QUADS | 2 | 70.0 ± 14.1 | 60.0 ± 14.1 | 0.2 |" in lambda_markdown([entry])


def test_lambdas_on_the_command_line_must_be_non_negative_numbers():
    import argparse

    from quads.commands.ablate import parse_lambdas

    assert parse_lambdas("0,0.01,1") == [0.0, 0.01, 1.0]
    for bad in ("-1", "a,b", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="--lambdas"):
            parse_lambdas(bad)


def test_the_lambda_sweep_runs_only_the_recipes_asked_for_and_names_one_without_a_centroid_term(tmp_path,
                                                                                                  monkeypatch):
    from quads.commands import lambda_sweep

    asked: list[list[Cell]] = []
    monkeypatch.setattr(lambda_sweep, "run_grid", lambda config, cells, *args, **kwargs: (asked.append(cells)
                                                                                         or ([{}], None)))
    lambda_sweep.run_lambda_sweep(tmp_path, [0.0], [0], bits=[4], recipes=["quads"], progress=False)
    assert [(cell.recipe, cell.bits) for cell in asked[0]] == [("quads", 4)]
    with pytest.raises(ConfigError, match="ptq"):
        lambda_sweep.run_lambda_sweep(tmp_path, [0.0], [0], bits=[4], recipes=["ptq"], progress=False)


def test_low_bit_epochs_retrain_only_the_runs_whose_epochs_they_change():
    prepared = fake_prepared()
    config = load_config(None, ["quant.epochs=4", "quant.low_bit_epochs=0"])
    longer = load_config(None, ["quant.epochs=4", "quant.low_bit_epochs=8"])
    for recipe in ("quads", "ptq", "distill"):
        assert run_fingerprint(with_bits(longer, 4), recipe, prepared) == run_fingerprint(with_bits(config, 4), recipe,
                                                                                          prepared)
    assert run_fingerprint(with_bits(longer, 2), "ptq", prepared) == run_fingerprint(with_bits(config, 2), "ptq",
                                                                                     prepared)
    assert run_fingerprint(with_bits(longer, 2), "quads", prepared) != run_fingerprint(with_bits(config, 2), "quads",
                                                                                       prepared)


def test_post_training_kmeans_ignores_the_quantize_stage_settings_it_never_trains():
    prepared = fake_prepared()
    config = load_config(None)
    other = load_config(None, ["quant.gamma=0.5", "quant.centroid_weight=0.1", "quant.epochs=9", "quant.low_bit_lr=0"])
    for bits in (4, 2):
        assert run_fingerprint(with_bits(other, bits), "ptq", prepared) == run_fingerprint(with_bits(config, bits),
                                                                                           "ptq", prepared)
        assert run_fingerprint(with_bits(other, bits), "quads", prepared) != run_fingerprint(with_bits(config, bits),
                                                                                             "quads", prepared)
    clustered = load_config(None, ["quant.kmeans_iterations=3"])
    assert run_fingerprint(with_bits(clustered, 4), "ptq", prepared) != run_fingerprint(with_bits(config, 4), "ptq",
                                                                                        prepared)
