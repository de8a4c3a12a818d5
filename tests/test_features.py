"""The feature cache: computed once per (audio content, front-end config), shared safely, self-healing."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from quads.audio import FrontEndConfig, LogMelSpectrogram, load_audio, pad_batch
from quads.cli import main as quads_main
from quads.data import Utterance
from quads.errors import AudioError, ConfigError
from quads.features import FeatureCache, compute_features, default_cache_dir

CONFIG = FrontEndConfig()


def make_utterances(folder: Path, durations: list[float]) -> list[Utterance]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    utterances = []
    for index, seconds in enumerate(durations):
        path = folder / f"u{index}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        utterances.append(Utterance(f"u{index}", path, "go", "spk"))
    return utterances


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("*.npz"))


def test_second_pass_reads_everything_from_the_cache_and_gives_identical_tensors(tmp_path):
    utterances = make_utterances(tmp_path / "audio", [0.5, 1.2, 0.3, 0.8])
    cold_cache = FeatureCache(tmp_path / "cache")
    cold = compute_features(utterances, CONFIG, cold_cache, batch_size=3, progress=False)
    assert (cold_cache.hits, cold_cache.misses) == (0, 4) and len(entries(tmp_path / "cache")) == 4
    warm_cache = FeatureCache(tmp_path / "cache")
    warm = compute_features(utterances, CONFIG, warm_cache, batch_size=3, progress=False)
    assert (warm_cache.hits, warm_cache.misses) == (4, 0)
    for a, b in zip(cold, warm, strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_features_come_back_in_input_order_with_each_clip_computed_alone(tmp_path):
    utterances = make_utterances(tmp_path / "audio", [0.3, 1.0, 0.5])
    features = compute_features(utterances, CONFIG, FeatureCache(tmp_path / "cache"), batch_size=8, progress=False)
    assert [f.shape for f in features] == [(80, 30), (80, 100), (80, 50)]
    frontend = LogMelSpectrogram(CONFIG)
    for utterance, stored in zip(utterances, features, strict=True):
        alone, _ = frontend(*pad_batch([load_audio(utterance.path)]))
        np.testing.assert_allclose(stored.numpy(), alone[0].numpy(), rtol=0, atol=2e-3)  # float16 storage


def test_float32_storage_keeps_the_exact_values(tmp_path):
    utterances = make_utterances(tmp_path / "audio", [0.4])
    stored = compute_features(utterances, CONFIG, FeatureCache(tmp_path / "c", dtype="float32"), progress=False)[0]
    alone, _ = LogMelSpectrogram(CONFIG)(*pad_batch([load_audio(utterances[0].path)]))
    assert torch.equal(stored, alone[0])


def test_without_a_cache_features_are_computed(tmp_path):
    utterances = make_utterances(tmp_path / "audio", [0.2, 0.4])
    assert [f.shape[1] for f in compute_features(utterances, CONFIG, None, progress=False)] == [20, 40]


def test_a_copied_file_hits_the_same_entry_because_the_key_is_the_content(tmp_path):
    (utterance,) = make_utterances(tmp_path / "audio", [0.5])
    compute_features([utterance], CONFIG, FeatureCache(tmp_path / "cache"), progress=False)
    copy = tmp_path / "elsewhere" / "renamed.wav"
    copy.parent.mkdir()
    shutil.copy(utterance.path, copy)
    cache = FeatureCache(tmp_path / "cache")
    compute_features([Utterance("other", copy, "go", "spk")], CONFIG, cache, progress=False)
    assert (cache.hits, cache.misses) == (1, 0)


def test_changed_audio_or_front_end_config_is_recomputed(tmp_path):
    (utterance,) = make_utterances(tmp_path / "audio", [0.5])
    compute_features([utterance], CONFIG, FeatureCache(tmp_path / "cache"), progress=False)

    cache = FeatureCache(tmp_path / "cache")
    compute_features([utterance], FrontEndConfig(n_mels=128), cache, progress=False)
    assert cache.misses == 1

    soundfile.write(utterance.path, np.zeros(8000, dtype=np.float32), 16000)
    stat = utterance.path.stat()
    os.utime(utterance.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cache = FeatureCache(tmp_path / "cache")
    compute_features([utterance], CONFIG, cache, progress=False)
    assert (cache.hits, cache.misses) == (0, 1)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_entry_is_detected_and_recomputed(tmp_path, damage):
    (utterance,) = make_utterances(tmp_path / "audio", [0.5])
    expected = compute_features([utterance], CONFIG, FeatureCache(tmp_path / "cache"), progress=False)[0]
    (entry,) = entries(tmp_path / "cache")
    data = bytearray(entry.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = bytearray(b"not a cache entry")
    entry.write_bytes(bytes(data))

    cache = FeatureCache(tmp_path / "cache")
    again = compute_features([utterance], CONFIG, cache, progress=False)[0]
    assert (cache.hits, cache.misses, cache.corrupt) == (0, 1, 1)
    assert torch.equal(again, expected)
    assert FeatureCache(tmp_path / "cache").get(cache.key(utterance.path, CONFIG), 80) is not None


def test_concurrent_writers_share_one_cache_and_leave_only_whole_entries(tmp_path):
    utterances = make_utterances(tmp_path / "audio", [0.3] * 6)
    results, errors = [], []

    def worker():
        try:
            results.append(compute_features(utterances, CONFIG, FeatureCache(tmp_path / "cache"), progress=False))
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(entries(tmp_path / "cache")) == 6 and not list((tmp_path / "cache").rglob("*.tmp"))
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))
    cache = FeatureCache(tmp_path / "cache")
    compute_features(utterances, CONFIG, cache, progress=False)
    assert cache.hits == 6


def test_missing_audio_is_an_audio_error(tmp_path):
    ghost = Utterance("ghost", tmp_path / "ghost.wav", "go", "spk")
    with pytest.raises(AudioError, match=r"ghost\.wav"):
        compute_features([ghost], CONFIG, FeatureCache(tmp_path / "cache"), progress=False)


def test_unknown_storage_dtype_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="int8"):
        FeatureCache(tmp_path, dtype="int8")


def test_default_cache_dir_honours_quads_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("QUADS_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "features"
    monkeypatch.delenv("QUADS_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "quads" / "features"


def test_features_command_fills_the_cache_then_reuses_it(tmp_path, capsys):
    audio = make_utterances(tmp_path / "corpus", [0.3, 0.5])
    manifest = tmp_path / "corpus" / "manifest.csv"
    manifest.write_text("path,label\n" + "".join(f"{u.path.name},go\n" for u in audio), encoding="utf-8")
    assert quads_main(["features", str(manifest), "--cache", str(tmp_path / "cache")]) == 0
    assert "2 utterances" in capsys.readouterr().out and len(entries(tmp_path / "cache")) == 2
    assert quads_main(["features", str(manifest), "--cache", str(tmp_path / "cache"), "--n-mels", "80"]) == 0
    assert "2 from cache, 0 computed" in capsys.readouterr().out


def test_features_command_reports_a_bad_corpus_without_a_traceback(tmp_path, capsys):
    assert quads_main(["features", str(tmp_path / "absent"), "--cache", str(tmp_path / "cache")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n", encoding="utf-8")
    assert quads_main(["features", str(manifest), "--recordings", "both", "--cache", str(tmp_path / "cache")]) == 2
    assert "['recordings'] do not apply to load_manifest" in capsys.readouterr().err
