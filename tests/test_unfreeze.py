"""Stage 0 with the teacher's encoder unfrozen: a Whisper encoder is fine-tuned, saved, reused; ONNX is refused;
a student cut from it starts from the tuned layers."""

import numpy as np
import pytest
import soundfile
import torch

from quads.config import load_config
from quads.data import Corpus, LabelMap, Utterance
from quads.errors import ConfigError
from quads.training.pretune import ENCODER_DIR, build_stage0_teacher


def _corpus(tmp_path) -> Corpus:
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", 12), ("valid", 4), ("test", 4)):
        utterances = []
        for i in range(count):
            label = ["low", "high"][i % 2]
            t = np.arange(8000) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (300 if label == "low" else 2500) * t) + 0.01 * rng.standard_normal(8000)
            path = tmp_path / f"{split}{i}.wav"
            soundfile.write(path, wave.astype(np.float32), 16000)
            utterances.append(Utterance(f"{split}{i}", path, label, "s"))
        splits[split] = utterances
    return Corpus("manifest", tmp_path, splits, LabelMap(["high", "low"]))


def test_unfrozen_whisper_encoder_is_fine_tuned_saved_and_reused(tmp_path):
    corpus = _corpus(tmp_path)
    config = load_config(None, ["teacher.spec=whisper-random:tiny", "teacher.unfreeze=true",
                                "teacher.unfreeze_epochs=1", "teacher.batch_size=4", "teacher.encoder_lr=0.001",
                                f"data.cache_dir={tmp_path / 'cache'}"])
    original = build_stage0_teacher(load_config(None, ["teacher.spec=whisper-random:tiny"]), corpus, tmp_path)
    tuned = build_stage0_teacher(config, corpus, tmp_path / "teacher", progress=False)
    assert (tmp_path / "teacher" / ENCODER_DIR / "encoder.safetensors").exists()
    assert tuned.identity() != original.identity()  # other weights: other cached outputs
    assert not any(p.requires_grad for p in tuned.encoder.parameters())  # frozen again for distillation
    again = build_stage0_teacher(config, corpus, tmp_path / "teacher", progress=False)
    assert again.identity() == tuned.identity()  # reused, not trained again
    for a, b in zip(tuned.encoder.state_dict().values(), again.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_an_onnx_teacher_cannot_be_unfrozen(tmp_path):
    config = load_config(None, ["teacher.spec=speech_embedding", "teacher.unfreeze=true"])
    with pytest.raises(ConfigError, match="cannot be fine-tuned"):
        build_stage0_teacher(config, _corpus(tmp_path), tmp_path)


def _whisper(layers: int, positions: int):
    from quads.models.whisper import WhisperTeacherEncoder, whisper_config

    return WhisperTeacherEncoder(whisper_config("tiny", encoder_layers=layers, max_source_positions=positions))


def test_a_whisper_student_starts_from_the_fine_tuned_teachers_first_layers():
    from types import SimpleNamespace

    from quads.commands.compress import copy_tuned_encoder
    from quads.models import IntentClassifier

    torch.manual_seed(0)
    teacher = SimpleNamespace(encoder=_whisper(4, 60))
    student = IntentClassifier(_whisper(2, 20), 3)
    assert copy_tuned_encoder(student, teacher) == len(student.encoder.encoder.state_dict())
    ours, theirs = student.encoder.encoder.state_dict(), teacher.encoder.encoder.state_dict()
    assert torch.equal(ours["embed_positions.weight"], theirs["embed_positions.weight"][:20])
    for name in ("conv1.weight", "layers.1.fc2.weight", "layer_norm.weight"):
        assert torch.equal(ours[name], theirs[name])
    assert "layers.2.fc1.weight" not in ours


def test_a_student_of_another_architecture_keeps_its_own_weights():
    from types import SimpleNamespace

    from quads.commands.compress import copy_tuned_encoder
    from quads.models import IntentClassifier

    teacher = SimpleNamespace(encoder=_whisper(2, 20))
    student = IntentClassifier(_whisper(1, 20), 3)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    narrower_teacher = SimpleNamespace(encoder=_whisper(2, 10))  # fewer positions than the student: no copy
    assert copy_tuned_encoder(student, narrower_teacher) == 0
    assert copy_tuned_encoder(student, SimpleNamespace(encoder=None)) == 0
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert copy_tuned_encoder(student, teacher) > 0
