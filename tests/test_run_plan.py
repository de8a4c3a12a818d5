import pytest

from quads.cli import main
from quads.training.run_plan import INDEX_BYTES, steps_per_epoch, teacher_width

INTENTS = [("activate", "lights", "none"), ("bring", "shoes", "none"), ("increase", "heat", "kitchen")]


def write_fsc_manifests(root, sizes=(("train", 70), ("valid", 9), ("test", 12))):
    """FSC's data/*.csv only: no audio file exists (as before the dataset's audio is downloaded)."""
    (root / "data").mkdir(parents=True)
    for split, count in sizes:
        lines = [",path,speakerId,transcription,action,object,location"]
        lines += [f"{i},wavs/speakers/s{i % 5}/{split}-{i}.wav,s{i % 5},words,{','.join(INTENTS[i % 3])}"
                  for i in range(count)]
        (root / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n")
    return root


def test_dry_run_plans_the_fsc_config_from_manifests_alone(tmp_path, capsys):
    corpus = write_fsc_manifests(tmp_path / "fsc")
    code = main(["compress", "--config", "configs/fsc-whisper-large.yaml", "--out", str(tmp_path / "run"),
                 "--dry-run", "--set", f"data.path={corpus}", "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "train 70  valid 9  test 12 utterances" in out and "no audio found: 3 s assumed" in out
    assert "1280-d frames x 50/s" in out  # Whisper-large's width, known without loading it
    assert f"quads 4b: 4 epochs x {steps_per_epoch(70, 32)} steps/epoch of 32" in out
    assert "memory bound" in out and "independent of corpus size" in out
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # nothing written


def test_dry_run_without_manifests_says_what_it_needs(tmp_path, capsys):
    code = main(["compress", "--out", str(tmp_path / "run"), "--dry-run", "--set", f"data.path={tmp_path / 'none'}"])
    assert code != 0
    assert "--dry-run needs the corpus manifests" in capsys.readouterr().err


def test_planned_sizes_grow_linearly_and_the_bound_only_by_the_index(tmp_path):
    from quads.config import load_config
    from quads.training.run_plan import plan_run

    def planned(count):
        corpus = write_fsc_manifests(tmp_path / str(count), (("train", count), ("valid", 3), ("test", 3)))
        config = load_config("configs/fsc-whisper-large.yaml", [f"data.path={corpus}"])
        return plan_run(config, [("quads", 4)])

    small, large = planned(30), planned(3000)
    assert large.teacher_bytes / small.teacher_bytes == pytest.approx(3006 / 36)
    assert large.memory_bound - small.memory_bound == (3006 - 36) * INDEX_BYTES


def test_teacher_widths_come_from_the_spec_name():
    assert teacher_width("whisper:openai/whisper-large-v3") == (1280, 50)
    assert teacher_width("whisper:tiny.en") == (384, 50)
    assert teacher_width("whisper:/models/my-finetune") is None
