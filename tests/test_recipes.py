import pytest

from quads.config import load_config
from quads.errors import ConfigError
from quads.training.recipes import RECIPES, paper_schedule, plan, pretrained_schedule, schedule_for


def test_paper_schedule_at_twenty_epochs_is_the_reference_pattern():
    assert paper_schedule(20) == [("distill", 3), ("quantize", 3), ("distill", 6), ("quantize", 8)]


@pytest.mark.parametrize("epochs", range(1, 41))
def test_scaled_schedule_keeps_the_budget_and_ends_on_quantize(epochs):
    schedule = paper_schedule(epochs)
    assert sum(n for _, n in schedule) == epochs
    assert schedule[-1][0] == "quantize"
    assert all(n >= 1 for _, n in schedule)


def test_default_schedule_depends_on_where_the_student_starts():
    pretrained = load_config(None, overrides=["quant.epochs=4"])
    assert schedule_for(pretrained) == pretrained_schedule(4) == [("quantize", 4)]
    for bits in (4, 2):  # a distilled student goes straight to its codebooks, the teacher still teaching
        stages = plan("quads", pretrained, bits=bits).stages
        assert [stage.name for stage in stages] == ["quantize"] and stages[0].weights.uses_teacher
    scratch = load_config(None, overrides=["quant.init=scratch", "optim.epochs=20"])
    assert schedule_for(scratch) == paper_schedule(20)
    pinned = load_config(None, overrides=["quant.schedule=[[distill, 1], [quantize, 3]]"])
    assert schedule_for(pinned) == [("distill", 1), ("quantize", 3)]
    with pytest.raises(ConfigError):
        pretrained_schedule(0)


def test_quads_quantize_stages_keep_the_teacher_teaching():
    config = load_config(None, overrides=["quant.epochs=10", "distill.alpha=0.5", "quant.gamma=0.4"])
    stages = plan("quads", config).stages
    quantize = [stage for stage in stages if stage.quantize]
    assert quantize and all(stage.weights.embedding == pytest.approx(0.4 * 0.5) for stage in quantize)
    assert all(stage.weights.centroid == pytest.approx(0.6 * config.quant.centroid_weight) for stage in quantize)
    assert stages[-1].quantize


def test_sequential_quantizes_a_distilled_student_without_the_teacher():
    config = load_config(None, overrides=["quant.epochs=20", "quant.low_bit_epochs=0"])
    recipe = plan("sequential", config, bits=2)
    assert recipe.start_from == "distill" and not recipe.uses_teacher
    assert [stage.epochs for stage in recipe.stages] == [20]  # the same budget as QUADS after the same start


def test_from_scratch_sequential_distils_then_quantizes_on_the_same_budget():
    config = load_config(None, overrides=["quant.init=scratch", "optim.epochs=20"])
    recipe = plan("sequential", config, bits=2)
    assert recipe.start_from is None
    assert [(stage.name, stage.epochs) for stage in recipe.stages] == [("distill", 9), ("quantize", 11)]
    assert plan("quads", config, bits=2).start_from is None


def test_qat_is_the_quads_schedule_without_a_teacher():
    config = load_config(None, overrides=["quant.epochs=20"])
    qat, quads = plan("qat", config, bits=4), plan("quads", config, bits=4)
    assert [s.epochs for s in qat.stages] == [s.epochs for s in quads.stages]
    assert not qat.uses_teacher and quads.uses_teacher
    assert (qat.start_from, quads.start_from) == ("fp32", "distill")


def test_sixteen_and_thirty_two_bits_train_in_float():
    config = load_config(None)
    for recipe in RECIPES:
        for bits in (16, 32):
            assert not any(stage.quantize for stage in plan(recipe, config, bits=bits).stages)


def test_unknown_recipe_and_schedule_not_ending_on_quantize_are_refused():
    config = load_config(None, overrides=["quant.schedule=[[quantize, 2], [distill, 2]]"])
    with pytest.raises(ConfigError, match="unknown recipe"):
        plan("quadz", config)
    with pytest.raises(ConfigError, match="must end on a quantize stage"):
        plan("quads", config)


def test_two_bit_recipes_train_at_the_low_bit_rate_and_the_rest_at_optim_lr():
    from quads.commands.compress import training_optim

    config = load_config(None, overrides=["optim.lr=1e-4", "optim.head_lr=5e-4", "quant.low_bit_lr=1e-3",
                                          "quant.lr=0"])
    for recipe, bits, expected in (("quads", 2, (1e-3, 1e-3)), ("sequential", 2, (1e-3, 1e-3)),
                                   ("quads", 4, (1e-4, 5e-4)), ("distill", 32, (1e-4, 5e-4))):
        optim = training_optim(config, plan(recipe, config, bits))
        assert (optim.lr, optim.head_lr) == expected, (recipe, bits)
    off = load_config(None, overrides=["optim.lr=1e-4", "quant.low_bit_lr=0"])
    assert training_optim(off, plan("quads", off, 2)).lr == 1e-4


def test_wider_codebooks_train_at_quant_lr_when_set_and_float_recipes_never_do():
    from quads.commands.compress import training_optim

    config = load_config(None, overrides=["optim.lr=1e-4", "optim.head_lr=5e-4", "quant.lr=2e-5"])
    for recipe, bits, expected in (("quads", 4, (2e-5, 2e-5)), ("qat", 8, (2e-5, 2e-5)),
                                   ("distill", 32, (1e-4, 5e-4)), ("fp32", 32, (1e-4, 5e-4))):
        optim = training_optim(config, plan(recipe, config, bits))
        assert (optim.lr, optim.head_lr) == expected, (recipe, bits)
    with pytest.raises(ConfigError, match=r"quant\.lr"):
        load_config(None, overrides=["quant.lr=-1"])


def test_two_bit_recipes_train_low_bit_epochs_when_set_and_wider_ones_quant_epochs():
    config = load_config(None, overrides=["quant.epochs=4", "quant.low_bit_epochs=8"])
    for recipe, bits, expected in (("quads", 2, [8]), ("sequential", 2, [8]), ("qat", 1, [8]),
                                   ("quads", 4, [4]), ("sequential", 3, [4]), ("distill", 32, [config.optim.epochs])):
        assert [stage.epochs for stage in plan(recipe, config, bits).stages] == expected, (recipe, bits)
    unset = load_config(None, overrides=["quant.epochs=4", "quant.low_bit_epochs=0"])
    assert [stage.epochs for stage in plan("quads", unset, 2).stages] == [4]
    with pytest.raises(ConfigError, match=r"quant\.low_bit_epochs"):
        load_config(None, overrides=["quant.low_bit_epochs=-1"])
