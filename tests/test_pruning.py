"""Structured pruning of Whisper's feed-forward units: the important ones kept, the output kept where the dropped
units wrote nothing, a narrowed student built, saved and rebuilt from its config, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.test_models_whisper import full_whisper_config, tiny_encoder
from transformers import WhisperModel

from quads.errors import ConfigError
from quads.models import build_encoder
from quads.models.pruning import gaussian_statistics, kept_units, narrow_feed_forward, unit_statistics
from quads.models.registry import PRETRAINED_STUDENTS
from quads.models.whisper import WhisperTeacherEncoder, whisper_student


def test_a_unit_that_writes_nothing_or_never_varies_is_dropped_first() -> None:
    torch.manual_seed(0)
    state = {"layers.0.fc1.weight": torch.randn(8, 4), "layers.0.fc1.bias": torch.zeros(8),
             "layers.0.fc2.weight": torch.randn(4, 8), "layers.0.final_layer_norm.weight": torch.ones(4),
             "layers.0.final_layer_norm.bias": torch.zeros(4)}
    state["layers.0.fc2.weight"][:, 2] = 0.0  # unit 2 writes nothing
    state["layers.0.fc1.bias"][5] = -50.0  # unit 5 is switched off by its bias
    assert set(kept_units(state, 0, 6).tolist()) == {0, 1, 3, 4, 6, 7}
    mean, spread = gaussian_statistics(state["layers.0.fc1.weight"], state["layers.0.fc1.bias"], torch.ones(4),
                                       torch.zeros(4))
    assert spread[5] < 1e-6 and float(spread.min()) >= 0.0
    assert float(mean[0]) > 0.0  # GELU of a zero-mean Gaussian is positive on average


def tiny_state_with(units: torch.Tensor, *, silent: bool) -> tuple[WhisperTeacherEncoder, dict[str, torch.Tensor]]:
    """A tiny encoder whose `units` of every layer write nothing (silent) or write a constant (fc1 row zero)."""
    full = tiny_encoder()
    state = full.encoder.state_dict()
    for layer in range(2):
        if silent:
            state[f"layers.{layer}.fc2.weight"][:, units] = 0.0
        else:
            state[f"layers.{layer}.fc1.weight"][units] = 0.0
            state[f"layers.{layer}.fc1.bias"][units] = 0.7
    full.encoder.load_state_dict(state)
    return full, state


def outputs_of(encoder: WhisperTeacherEncoder) -> torch.Tensor:
    features = torch.randn(2, 80, 90, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 90, dtype=torch.bool)
    mask[1, 50:] = False
    with torch.no_grad():
        frames, frame_mask = encoder(features, mask)
    return frames[frame_mask]


@pytest.mark.parametrize("silent", [True, False], ids=["units-writing-nothing", "units-writing-a-constant"])
@pytest.mark.parametrize("measured", [False, True], ids=["data-free", "measured"])
def test_dropping_units_that_write_nothing_or_a_constant_leaves_the_output_unchanged(silent, measured) -> None:
    odd = torch.arange(64) % 2 == 1
    full, state = tiny_state_with(odd, silent=silent)
    calibration = [(torch.randn(3, 80, 70, generator=torch.Generator().manual_seed(2)),
                    torch.ones(3, 70, dtype=torch.bool))]
    statistics = unit_statistics(full, calibration) if measured else None
    assert kept_units(state, 0, 32, statistics).tolist() == list(range(0, 64, 2))
    narrow = tiny_encoder(encoder_ffn_dim=32)
    narrow.encoder.load_state_dict(narrow_feed_forward(state, 32, statistics))
    torch.testing.assert_close(outputs_of(narrow), outputs_of(full), atol=1e-5, rtol=1e-5)
    assert state["layers.0.fc1.weight"].shape == (64, 32)  # the source state is not modified


def test_measured_statistics_count_real_frames_only() -> None:
    encoder = tiny_encoder()
    clip = torch.randn(1, 80, 40, generator=torch.Generator().manual_seed(3))
    alone = unit_statistics(encoder, [(clip, torch.ones(1, 40, dtype=torch.bool))])
    padded = torch.cat([torch.cat([clip, torch.full((1, 80, 30), 5.0)], dim=2), clip.new_zeros(1, 80, 70)])
    mask = torch.zeros(2, 70, dtype=torch.bool)
    mask[0, :40] = True  # the second clip is all padding
    batched = unit_statistics(encoder, [(padded, mask)])
    for layer in (0, 1):
        for ours, expected in zip(batched[layer], alone[layer], strict=True):
            torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
    assert encoder.training is False
    with pytest.raises(ConfigError, match="no real frame"):
        unit_statistics(encoder, [])


def test_a_narrow_student_is_cut_from_a_checkpoint_and_rebuilt_from_its_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    WhisperModel(full_whisper_config()).save_pretrained(tmp_path)
    calibration = [(torch.randn(2, 80, 60, generator=torch.Generator().manual_seed(4)),
                    torch.ones(2, 60, dtype=torch.bool))]
    student = whisper_student(str(tmp_path), encoder_layers=1, max_source_positions=40, encoder_ffn_dim=16,
                              calibration=calibration)
    source = WhisperTeacherEncoder.from_pretrained(tmp_path).encoder.state_dict()
    full = whisper_student(str(tmp_path), encoder_layers=1, max_source_positions=40)
    keep = kept_units(source, 0, 16, unit_statistics(full, calibration))
    assert not torch.equal(keep, kept_units(source, 0, 16))  # real statistics choose other units than data-free
    ours = student.encoder.state_dict()
    torch.testing.assert_close(ours["layers.0.fc1.weight"], source["layers.0.fc1.weight"][keep])
    torch.testing.assert_close(ours["layers.0.fc2.weight"], source["layers.0.fc2.weight"][:, keep])
    torch.testing.assert_close(ours["layers.0.self_attn.q_proj.weight"], source["layers.0.self_attn.q_proj.weight"])
    assert "feed-forward 16 of 64 units" in student.description()
    rebuilt = build_encoder(student.config_dict())
    rebuilt.load_state_dict(student.state_dict())  # same shapes: a packed file rebuilds the narrow student
    with pytest.raises(ConfigError, match=r"encoder_ffn_dim must be in 1\.\.64"):
        whisper_student(str(tmp_path), encoder_layers=1, encoder_ffn_dim=65)


def test_narrow_students_are_named_presets() -> None:
    checkpoint, cut = PRETRAINED_STUDENTS["whisper-tiny.en-3l-ffn384"]
    assert checkpoint == "tiny.en" and cut == {"encoder_layers": 3, "max_source_positions": 500,
                                               "encoder_ffn_dim": 384}
    assert "encoder_ffn_dim" not in PRETRAINED_STUDENTS["whisper-tiny.en-3l"][1]


def test_calibration_batches_spread_over_the_split() -> None:
    from quads.commands.compress import calibration_batches
    from quads.training.batches import ExampleSet

    examples = ExampleSet([torch.full((80, 10 + i), float(i)) for i in range(10)], list(range(10)), time_dim=1)
    batches = calibration_batches(examples, clips=4, batch_size=3)
    assert [features.shape[0] for features, _ in batches] == [3, 1]
    firsts = [float(features[row, 0, 0]) for features, _ in batches for row in range(features.shape[0])]
    assert firsts == [0.0, 3.0, 6.0, 9.0]
    assert all(mask.dtype == torch.bool for _, mask in batches)
    assert sum(features.shape[0] for features, _ in calibration_batches(examples, clips=64)) == 10


def test_narrowing_runs_inside_a_meta_device_context() -> None:
    """`quads.commands.compress.quantized_widths` builds students on the meta device from cached CPU weights."""
    state = tiny_encoder().encoder.state_dict()
    with torch.device("meta"):
        narrowed = narrow_feed_forward(state, 16)
    assert narrowed["layers.1.fc2.weight"].shape == (32, 16)
