"""Slot heads: the layout read off the labels, intent logits as sums of slot logits, files and teacher copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quads.commands.compress import copy_teacher_head
from quads.compression.file_checks import check_architecture
from quads.compression.packed import ModelFileError
from quads.errors import ConfigError
from quads.models import ConvConfig, ConvEncoder, IntentClassifier, TeacherHead, build_classifier
from quads.models.slots import SlotHead, check_layout, slot_layout

FSC_LABELS = ["activate_lamp_none", "decrease_heat_washroom", "change language_English_none",
              "decrease_volume_none", "increase_heat_washroom", "activate_lights_kitchen"]


def test_fsc_labels_factor_into_action_object_and_location() -> None:
    layout = slot_layout(FSC_LABELS)
    assert all(len(entry) == 3 for entry in layout)
    actions = sorted({label.split("_")[0] for label in FSC_LABELS})
    assert [actions[entry[0]] for entry in layout] == [label.split("_")[0] for label in FSC_LABELS]
    # the two decreases share their action value, the two washroom intents their location value
    assert layout[1][0] == layout[3][0] and layout[1][2] == layout[4][2]


def test_the_fewest_parts_set_the_slot_count_and_the_last_slot_keeps_the_rest() -> None:
    assert slot_layout(["alarm_set", "iot_hue_lightchange", "iot_cleaning"]) == [[0, 2], [1, 1], [1, 0]]


@pytest.mark.parametrize("labels", [["zero", "one", "two"], ["a__b", "a_c_d"]])
def test_labels_that_do_not_factor_give_one_slot_of_whole_intents(labels: list[str]) -> None:
    layout = slot_layout(labels)
    assert [len(entry) for entry in layout] == [1] * len(labels)
    assert sorted(entry[0] for entry in layout) == list(range(len(labels)))


@pytest.mark.parametrize("layout, problem", [
    ([[0, 1]], "one entry per intent"),
    ([[0, 1], [1]], "same number"),
    ([[0, 1], [0, 1]], "same slot values"),
    ([[0, True], [1, 0]], "integers"),
    ([[0, 5], [1, 0]], "integers"),
])
def test_a_malformed_layout_is_a_config_error_saying_what_is_wrong(layout, problem) -> None:
    with pytest.raises(ConfigError, match=problem):
        check_layout(layout, 2)


def frames_and_mask(lengths: list[int], dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.randn(len(lengths), max(lengths), dim, generator=torch.Generator().manual_seed(3))
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return frames, mask


def test_an_intent_logit_is_the_sum_of_its_slot_logits_and_padding_changes_nothing() -> None:
    torch.manual_seed(0)
    layout = slot_layout(FSC_LABELS)
    head = SlotHead(16, layout).eval()
    frames, mask = frames_and_mask([12, 7])
    logits, z = head(frames, mask)
    pooled = [pool(frames, mask) for pool in head.pools]
    slot_logits = [classify(p) for classify, p in zip(head.classifiers, pooled, strict=True)]
    for intent, entry in enumerate(layout):
        expected = sum(slot_logits[slot][:, value] for slot, value in enumerate(entry))
        torch.testing.assert_close(logits[:, intent], expected)
    torch.testing.assert_close(z, torch.stack(pooled).mean(0))
    padded = torch.cat([frames, torch.randn(2, 5, 16)], dim=1)
    torch.testing.assert_close(head(padded, torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], 1))[0], logits)
    assert "combine" not in head.state_dict()  # rebuilt from the layout, never stored


def slot_student() -> IntentClassifier:
    torch.manual_seed(0)
    encoder = ConvEncoder(ConvConfig(n_mels=80, stem_channels=8, stage_channels=(16,), stage_strides=(2,),
                                     stage_blocks=(1,)))
    return IntentClassifier(encoder, len(FSC_LABELS), head="slots", slots=slot_layout(FSC_LABELS)).eval()


def test_a_slot_student_rebuilds_from_its_config_and_agrees() -> None:
    classifier = slot_student()
    config = json.loads(json.dumps(classifier.config_dict()))
    assert config["head"]["slots"] == slot_layout(FSC_LABELS) and "pooling" not in config["head"]
    check_architecture(Path("m.quads"), config)
    rebuilt = build_classifier(config).eval()
    rebuilt.load_state_dict(classifier.state_dict())
    features = torch.randn(2, 80, 40)
    mask = torch.ones(2, 40, dtype=torch.bool)
    torch.testing.assert_close(rebuilt(features, mask).logits, classifier(features, mask).logits)


def test_a_model_file_with_a_broken_slot_layout_is_refused_naming_the_field() -> None:
    config = slot_student().config_dict()
    config["head"]["slots"] = config["head"]["slots"][:-1]
    with pytest.raises(ModelFileError, match=r"architecture\.head\.slots"):
        check_architecture(Path("m.quads"), config)


def test_a_slots_head_without_a_layout_is_a_config_error() -> None:
    encoder = ConvEncoder(ConvConfig(n_mels=16, stem_channels=8, stage_channels=(16,), stage_strides=(2,),
                                     stage_blocks=(1,)))
    with pytest.raises(ConfigError, match="slot layout"):
        IntentClassifier(encoder, 4, head="slots")
    with pytest.raises(ConfigError, match="slot layout"):
        TeacherHead(16, 4, kind="slots")


def test_the_student_starts_as_the_teachers_slot_head_and_hears_the_same_frames_alike() -> None:
    classifier = slot_student()
    teacher = TeacherHead(16, len(FSC_LABELS), kind="slots", slots=slot_layout(FSC_LABELS)).eval()
    assert copy_teacher_head(classifier, teacher)
    frames, mask = frames_and_mask([9, 4])
    torch.testing.assert_close(classifier.head(frames, mask)[0], teacher(frames, mask).logits)
    other = TeacherHead(16, len(FSC_LABELS), kind="slots", slots=slot_layout(list("abcdef"))).eval()
    assert not copy_teacher_head(classifier, other)  # another layout: nothing is copied


def test_slot_poolings_train_at_the_encoders_rate_and_slot_classifiers_at_the_heads() -> None:
    from quads.config import OptimConfig
    from quads.training.optimizer import make_optimizer

    classifier = slot_student()
    optimizer = make_optimizer(classifier, OptimConfig(lr=1e-4, head_lr=5e-4))
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    for name, parameter in classifier.named_parameters():
        expected = 5e-4 if name.startswith("head.classifiers.") else 1e-4
        assert rate[id(parameter)] == expected, name
