"""End to end on a tiny synthetic corpus: synth -> pretune -> compress -> export -> load -> predict / eval."""

import json
import shutil
import stat
import warnings

import pytest
import torch

from quads.cli import main
from quads.commands.compress import compress, with_bits
from quads.commands.export import export_run, export_run_onnx
from quads.compression.codebook import group_length
from quads.config import load_config
from quads.runtime.model import load
from quads.training.checkpoints import load_student

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                       reason="needs espeak-ng and flite"),
]

PHRASES = "transcription\tintent\nturn the lights on\tlights_on\nlights on please\tlights_on\n" \
          "turn the lights off\tlights_off\nlights off now\tlights_off\nplay some music\tmusic_play\n" \
          "start the music\tmusic_play\n"


def tiny_overrides(root, *extra):
    """Settings that make every run of the pipeline take seconds on the tiny corpus."""
    return [f"data.path={root / 'corpus'}", f"data.cache_dir={root / 'cache'}", "teacher.epochs=3",
            "teacher.head=linear", "student.encoder=conv-50k", "optim.epochs=4", "optim.batch_size=8",
            "quant.epochs=3", "quant.low_bit_epochs=0", *extra]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    (root / "phrases.tsv").write_text(PHRASES)
    assert main(["synth", "--out", str(root / "corpus"), "--phrases", str(root / "phrases.tsv"), "--speakers", "10",
                 "--seed", "1", "--jobs", "2", "--quiet"]) == 0
    overrides = tiny_overrides(root)
    return root, load_config(None, overrides)


@pytest.fixture(scope="module")
def quads2(workspace):
    """QUADS at 2 bits; trains its own teacher and distilled student inside its folder."""
    root, config = workspace
    return compress(with_bits(config, 2), "quads", root / "quads2", progress=False)


@pytest.fixture(scope="module")
def distill(workspace, quads2):
    """The distilled student at the config's default bits (4): a float recipe, so it runs at 32 bits."""
    root, config = workspace
    assert config.quant.bits == 4
    return compress(config, "distill", root / "distill", teacher_dir=root / "quads2" / "teacher", progress=False)


@pytest.fixture(scope="module")
def ptq4(workspace, distill):
    root, config = workspace
    return compress(with_bits(config, 4), "ptq", root / "ptq4", init_dir=root / "distill", progress=False)


def test_quads_run_exports_a_file_that_predicts_exactly_like_the_trained_student(workspace, quads2):
    root, _ = workspace
    summary = json.loads((root / "quads2" / "summary.json").read_text())
    assert summary["teacher_cache"]["teacher_passes"] == summary["teacher_cache"]["utterances"]
    assert [phase for phase, _ in summary["stages"]][-1] == "quantize"
    assert "bits: 2" in (root / "quads2" / "config.yaml").read_text()

    info = export_run(root / "quads2", root / "quads2.quads")
    assert info.file_bytes < 0.2 * 4 * summary["params"]  # far below the fp32 size
    model = load(root / "quads2.quads")
    student = load_student(root / "quads2")
    assert student["bits"] == model.metadata["bits"] == 2
    for name, tensor in model.classifier.state_dict().items():
        assert torch.equal(tensor, student["model"][name]), name
    weights_per_centroid = load_config(root / "quads2" / "config.yaml").quant.weights_per_centroid
    assert weights_per_centroid > 0  # the default: group codebooks
    for name, tensor in model.classifier.state_dict().items():
        if name.endswith("weight") and tensor.ndim > 1 and tensor.numel() >= 16:  # 4 values per group's codebook
            group_len = group_length(tensor.shape, weights_per_centroid * 2**2)
            assert all(group.unique().numel() <= 4 for group in tensor.flatten().split(group_len)), name
    assert quads2.test_accuracy == summary["test_accuracy"]
    assert all(row["latent_spread"] > 0 for row in summary["history"] if row["stage"] == "quantize")


def test_a_float_recipe_at_low_bits_runs_and_is_labelled_32_bit(workspace, distill):
    root, _ = workspace
    assert distill.bits == 32 and distill.summary["quantization"] is None
    assert load_student(root / "distill")["bits"] == 32
    assert "bits: 32" in (root / "distill" / "config.yaml").read_text()


def test_second_run_hits_the_teacher_cache_and_reuses_the_pretuned_teacher(workspace, distill):
    root, _ = workspace
    summary = json.loads((root / "distill" / "summary.json").read_text())
    assert summary["teacher_cache"]["teacher_passes"] == 0
    assert summary["teacher_cache"]["hits"] == summary["teacher_cache"]["utterances"]


def test_sequential_and_ptq_start_from_the_distilled_student(workspace, ptq4):
    root, config = workspace
    assert ptq4.summary["epochs"] == 0 and ptq4.summary["quantization"]
    sequential = compress(with_bits(config, 4), "sequential", root / "seq4", init_dir=root / "distill",
                          progress=False)
    assert sequential.summary["stages"] == [["quantize", 3]]


def test_a_stale_initial_student_is_trained_again(workspace, distill, caplog):
    root, _ = workspace
    shutil.copytree(root / "distill", root / "distill-copy")
    other = load_config(None, tiny_overrides(root, "optim.epochs=2"))
    with caplog.at_level("WARNING"):
        compress(with_bits(other, 4), "ptq", root / "ptq-stale", init_dir=root / "distill-copy",
                 teacher_dir=root / "quads2" / "teacher", progress=False)
    assert "not reusing the initial student" in caplog.text and "optim.epochs: 4 there, 2 here" in caplog.text
    assert json.loads((root / "distill-copy" / "summary.json").read_text())["epochs"] == 2
@pytest.mark.parametrize(("run", "bits"), [("quads2", 2), ("ptq4", 4)])
def test_codebook_onnx_of_a_trained_student_equals_its_packed_model_on_speech(workspace, tmp_path, run, bits,
                                                                               request):
    request.getfixturevalue(run)
    from quads.audio import load_audio, pad_batch
    from quads.runtime.onnx_export import verify_onnx

    root, _ = workspace
    export_run(root / run, tmp_path / "m.quads")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every quantized tensor keeps its codebook form
        assert export_run_onnx(tmp_path / "m.quads", tmp_path / "m.onnx") <= 1e-5
    assert export_run_onnx(tmp_path / "m.quads", tmp_path / "float.onnx", codebooks=False) <= 1e-5
    model = load(tmp_path / "m.quads")
    assert model.metadata["bits"] == bits
    wavs = sorted((root / "corpus" / "wavs" / "speakers").rglob("*.wav"))[:6]
    features, mask = model.frontend(*pad_batch([load_audio(wav) for wav in wavs]))
    for path in (tmp_path / "m.onnx", tmp_path / "float.onnx"):
        assert verify_onnx(model.classifier, path, features, mask) <= 1e-5
        assert verify_onnx(model.classifier, path, features[:1, :, :37], mask[:1, :37]) <= 1e-5
    assert (tmp_path / "m.onnx").stat().st_size < 0.5 * (tmp_path / "float.onnx").stat().st_size


def test_cli_export_predict_and_eval(workspace, quads2, capsys, tmp_path):
    root, _ = workspace
    assert main(["export", str(root / "quads2"), "--out", str(tmp_path / "m.quads"), "--onnx",
                 str(tmp_path / "m.onnx"), "--onnx-float", str(tmp_path / "float.onnx")]) == 0
    assert stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode) == stat.S_IMODE((tmp_path / "m.quads").stat().st_mode)
    assert (tmp_path / "m.onnx").stat().st_size < (tmp_path / "float.onnx").stat().st_size
    wav = next((root / "corpus" / "wavs" / "speakers").rglob("*.wav"))
    assert main(["predict", str(tmp_path / "m.quads"), str(wav)]) == 0
    out = capsys.readouterr().out
    assert wav.name in out and any(label in out for label in ("lights_on", "lights_off", "music_play"))
    for flags in (["--as-recorded"], []):
        assert main(["eval", str(tmp_path / "m.quads"), "--data", str(root / "corpus"), "--json",
                     str(tmp_path / "eval.json"), "--cache", str(root / "cache" / "features"), "--quiet",
                     "--latency-samples", "3", *flags]) == 0
        report = json.loads((tmp_path / "eval.json").read_text())
        assert report["bits"] == 2
        if flags:  # every clip whole, at its own level: the packed file scores exactly as the trained student did
            assert report["accuracy"] == pytest.approx(quads2.test_accuracy)
        else:  # the scored window (quads.runtime.speech_window) may hear a clip differently
            assert 0.0 <= report["accuracy"] <= 1.0


def test_resume_of_a_finished_run_with_other_settings_is_refused(workspace, distill):
    root, _ = workspace
    other = load_config(None, [f"data.path={root / 'corpus'}", f"data.cache_dir={root / 'cache'}",
                               "student.encoder=conv-50k", "optim.epochs=4", "optim.batch_size=8", "quant.epochs=3",
                               "seed=5"])
    from quads.training.checkpoints import CheckpointMismatch

    with pytest.raises(CheckpointMismatch, match="seed: 0 there, 5 here"):
        compress(other, "distill", root / "distill", teacher_dir=root / "quads2" / "teacher", resume=True,
                 progress=False)


def test_demo_writes_the_results_contract(workspace, capsys):
    root, _ = workspace
    from quads.commands.demo import run_demo

    overrides = tiny_overrides(root)
    rows = run_demo(root / "demo", overrides=overrides, progress=False, real_speech=False, sequential=True)
    saved = json.loads((root / "demo" / "results.json").read_text())
    assert saved == rows
    assert (root / "demo" / "results.md").exists() and (root / "demo" / "pareto.png").stat().st_size > 1000
    methods = [(row["method"], row["bits"]) for row in rows]
    assert methods[0] == ("teacher", 32)
    assert {("QUADS", 2), ("QUADS", 4), ("PTQ", 2), ("PTQ", 4), ("sequential", 2), ("student + distill", 32)} <= set(
        methods)
    from quads.commands.demo import demo_cells

    assert ("sequential", 2) not in demo_cells() and ("sequential", 2) in demo_cells(sequential=True)
    for row in rows[1:]:
        for key in ("params", "size_bytes", "theoretical_bytes", "gmacs", "accuracy", "f1", "model_file"):
            assert row[key] is not None, (row["method"], key)
        assert row["size_bytes"] >= row["theoretical_bytes"]
    sizes = {(row["method"], row["bits"]): row["size_bytes"] for row in rows[1:]}
    assert sizes[("QUADS", 2)] < sizes[("QUADS", 4)] < sizes[("student + distill", 32)]
    assert "QUADS" in capsys.readouterr().out


def test_ablation_skips_finished_cells(workspace, monkeypatch):
    root, _ = workspace
    import quads.commands.grid
    from quads.commands.ablate import run_ablation

    overrides = tiny_overrides(root, "optim.epochs=2")
    first = run_ablation(root / "ablate", [0], overrides=overrides, bits=[4], recipes=["ptq"], progress=False)
    assert [row["method"] for row in first] == ["teacher", "PTQ"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(quads.commands.grid, "compress", no_training)
    again = run_ablation(root / "ablate", [0], overrides=overrides, bits=[4], recipes=["ptq"], progress=False)
    assert again == first
    assert (root / "ablate" / "results_mean_std.md").exists()


def test_real_speech_rows_score_synthetic_trained_models_on_fsdd(workspace, monkeypatch):
    """The demo's FSDD part on a small scale: digits synthesised by 6 voices, 20 real recordings scored."""
    import quads.commands.fsdd
    from quads.commands.fsdd import SCORES_FILE, find_fsdd, fsdd_markdown, fsdd_rows
    from quads.commands.grid import Cell

    recordings, looked = find_fsdd()
    if recordings is None:
        pytest.skip(f"no FSDD recordings in {looked}")
    root, _ = workspace
    overrides = [o for o in tiny_overrides(root, "teacher.epochs=8") if not o.startswith("data.path=")]
    rows = fsdd_rows(load_config(None, overrides), [Cell("distill", 32, 0)], root / "fsdd", recordings, limit=20,
                     speakers=6, progress=False)
    assert [row["method"] for row in rows] == ["teacher", "student + distill"]
    trained = load_config(root / "fsdd" / "grid" / "runs" / "distill-32b-s0" / "config.yaml")
    assert (trained.teacher.epochs, trained.optim.epochs) == (16, 8)  # the digits train twice the epochs
    for row in rows:
        assert row["fsdd_utterances"] == 20 and 0.0 <= row["fsdd_accuracy"] <= 1.0
    assert rows[0]["fsdd_accuracy"] >= 0.3  # chance is 0.1: Whisper tiny.en hears real digits after 6 TTS voices
    assert "FSDD acc" in fsdd_markdown(rows)

    def no_scoring(*args, **kwargs):
        raise AssertionError("an unchanged model file was scored on FSDD again")

    real_scoring = quads.commands.fsdd.evaluate_model_file
    monkeypatch.setattr(quads.commands.fsdd, "evaluate_model_file", no_scoring)
    again = fsdd_rows(load_config(None, overrides), [Cell("distill", 32, 0)], root / "fsdd", recordings, limit=20,
                      speakers=6, progress=False)
    assert [row["fsdd_accuracy"] for row in again] == [row["fsdd_accuracy"] for row in rows]
    (root / "fsdd" / SCORES_FILE).write_text("{damaged", encoding="utf-8")  # only a cache: scored afresh
    monkeypatch.setattr(quads.commands.fsdd, "evaluate_model_file", real_scoring)
    rescored = fsdd_rows(load_config(None, overrides), [Cell("distill", 32, 0)], root / "fsdd", recordings, limit=20,
                         speakers=6, progress=False)
    assert rescored[1]["fsdd_accuracy"] == rows[1]["fsdd_accuracy"]
