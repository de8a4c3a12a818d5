import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.helpers.interrupt import interrupt_after_epoch
from tests.helpers.toy import ToyClassifier, toy_examples, toy_store

import quads.training.checkpoints as checkpoints_module
import quads.training.loop as train_module
from quads.config import DistillConfig, OptimConfig
from quads.errors import QuadsError
from quads.training.checkpoints import CheckpointMismatch, load_checkpoint
from quads.training.loop import Stage, TeacherTargets, TrainingDiverged, fit
from quads.training.losses import ce_weights, distillation_weights

OPTIM = OptimConfig(epochs=4, batch_size=16, lr=1e-2, head_lr=0.0, warmup_epochs=0.5, spec_augment=True)


def _fit(run_dir, *, epochs=4, resume=False, fingerprint="a", teacher=None, stages=None, stores=None):
    """Train the toy model; `stores`: a folder to read the same examples from sharded stores on disk."""
    torch.manual_seed(0)
    model = ToyClassifier()
    stages = stages or [Stage("ce", epochs, ce_weights())]
    train_set, valid_set = toy_examples(96, 0), toy_examples(30, 1)
    if stores is not None:
        train_set, valid_set = toy_store(stores / "train", 96, 0), toy_store(stores / "valid", 30, 1)
    result = fit(model, train_set, valid_set, stages, OPTIM, run_dir, seed=3,
                 teacher=teacher, fingerprint=fingerprint, resume=resume, progress=False)
    return model, result


def test_training_learns_a_separable_task(tmp_path):
    _, result = _fit(tmp_path)
    assert result.best_valid_accuracy > 0.9
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 5


def test_resume_after_a_kill_gives_the_same_final_weights(tmp_path, monkeypatch):
    """Through the streaming path (examples read from shards on disk), which must also equal the in-memory one."""
    stores = tmp_path / "stores"
    _, uninterrupted = _fit(tmp_path / "full", stores=stores)
    _, in_memory = _fit(tmp_path / "memory")
    for key, value in in_memory.model_state.items():
        assert torch.equal(value, uninterrupted.model_state[key]), key

    real_write = interrupt_after_epoch(monkeypatch, 2)  # the process dies right after the epoch-2 checkpoint
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", stores=stores)
    monkeypatch.setattr(train_module, "write_metrics_csv", real_write)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2
    _, resumed = _fit(tmp_path / "killed", resume=True, stores=stores)

    for key, value in uninterrupted.model_state.items():
        assert torch.equal(value, resumed.model_state[key]), key
    accuracies = [row["valid_accuracy"] for row in uninterrupted.history]
    assert accuracies == [row["valid_accuracy"] for row in resumed.history]


def test_resume_refuses_a_checkpoint_from_another_config(tmp_path):
    _fit(tmp_path, epochs=1, fingerprint="config-a")
    with pytest.raises(CheckpointMismatch, match="different configuration"):
        _fit(tmp_path, epochs=1, fingerprint="config-b", resume=True)


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    torch.manual_seed(0)
    model = ToyClassifier()
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        fit(model, toy_examples(32, 0), toy_examples(8, 1), [Stage("ce", 1, ce_weights())], OPTIM, tmp_path,
            progress=False)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_atomic_write = checkpoints_module.atomic_write
    calls = {"n": 0}

    def disk_full_on_second_checkpoint(path, write):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_atomic_write(path, write)

    monkeypatch.setattr(checkpoints_module, "atomic_write", disk_full_on_second_checkpoint)
    with pytest.raises(QuadsError, match="No space left"):
        _fit(tmp_path, epochs=3)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []


def test_distillation_needs_teacher_targets(tmp_path):
    with pytest.raises(QuadsError, match="teacher targets"):
        _fit(tmp_path, stages=[Stage("distill", 1, distillation_weights(DistillConfig(alpha=0.5)))])


def test_distillation_pulls_the_projected_student_toward_the_teacher(tmp_path):
    teacher_embeddings = torch.randn(96, 5, generator=torch.Generator().manual_seed(0))
    teacher = TeacherTargets(embeddings=teacher_embeddings)
    stages = [Stage("distill", 4, distillation_weights(DistillConfig(alpha=0.9)))]
    _, result = _fit(tmp_path, teacher=teacher, stages=stages)
    l1_start = result.history[0]["train_loss"]
    assert result.history[-1]["train_loss"] < l1_start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ce", "quantize"])
def test_two_process_gloo_training_matches_one_process(tmp_path, mode):
    """Also through a 2-bit quantize stage with the centroid term on: same codebooks, same snapped weights."""
    repo = Path(__file__).resolve().parents[1]
    worker = repo / "tests" / "helpers" / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stores = tmp_path / "stores"  # both runs read their examples from shards on disk (the streaming path)
    toy_store(stores / "train", 96, 0)
    toy_store(stores / "valid", 30, 1)
    single = subprocess.run([sys.executable, str(worker), str(tmp_path / "one"), mode, str(stores)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), str(worker), str(tmp_path / "two"), mode, str(stores)],
        env=env, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "final.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    for key in one:
        torch.testing.assert_close(one[key], two[key], atol=1e-5, rtol=1e-4)
    if mode == "quantize":
        for key in ("conv.weight", "head.weight"):
            assert one[key].unique().numel() <= 4 and two[key].unique().numel() <= 4, key


def test_length_buckets_are_a_seeded_permutation_with_little_padding():
    from quads.training.batches import global_batches

    lengths = torch.randint(50, 400, (500,), generator=torch.Generator().manual_seed(0))
    epoch3 = global_batches(500, 16, 0, 3, lengths=lengths)
    assert all(torch.equal(a, b) for a, b in zip(epoch3, global_batches(500, 16, 0, 3, lengths=lengths), strict=True))
    assert sorted(torch.cat(epoch3).tolist()) == list(range(500))  # the partial batch of 4 is kept
    assert not torch.equal(torch.cat(epoch3), torch.cat(global_batches(500, 16, 0, 4, lengths=lengths)))

    def padding(batches):
        return sum(int(lengths[b].max()) * len(b) for b in batches) / int(lengths[torch.cat(batches)].sum())

    assert padding(epoch3) < 1.15 < 1.4 < padding(global_batches(500, 16, 0, 3))
