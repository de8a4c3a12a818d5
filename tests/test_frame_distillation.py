"""Frame-level distillation, attention pooling, and the projection P carried from one recipe to the next."""

from __future__ import annotations

import torch
from tests.helpers.toy import ToyClassifier, toy_examples
from torch import nn

from quads.config import DistillConfig
from quads.models import IntentClassifier, TeacherHead
from quads.models.pooling import AttentionPool
from quads.training.batches import ExampleSet
from quads.training.loop import Stage, TeacherTargets, fit
from quads.training.losses import align_frames, distillation_weights, frame_l1


def test_align_frames_copies_equal_lengths_and_resamples_others() -> None:
    same = torch.randn(5, 3)
    longer = torch.arange(9.0)[:, None].repeat(1, 3)
    mask = torch.tensor([[True] * 5 + [False] * 2, [True] * 5 + [False] * 2])
    aligned = align_frames([same, longer], mask)
    assert aligned.shape == (2, 7, 3)
    torch.testing.assert_close(aligned[0, :5], same)
    torch.testing.assert_close(aligned[1, :5, 0], torch.tensor([0.0, 2.0, 4.0, 6.0, 8.0]))  # endpoints kept
    assert aligned[:, 5:].abs().sum() == 0


def test_frame_l1_ignores_padded_frames() -> None:
    target = torch.zeros(1, 4, 2)
    projected = torch.ones(1, 4, 2)
    projected[0, 2:] = 100.0  # padding: must not count
    mask = torch.tensor([[True, True, False, False]])
    torch.testing.assert_close(frame_l1(projected, target, mask), torch.tensor([1.0]))


def test_attention_pool_is_blind_to_padding_and_safe_without_frames() -> None:
    torch.manual_seed(0)
    pool = AttentionPool(8, heads=2)
    alone = torch.randn(1, 5, 8)
    padded = torch.cat([alone, torch.full((1, 3, 8), 1e4)], dim=1)  # junk in the padding
    mask = torch.tensor([[True] * 5 + [False] * 3])
    torch.testing.assert_close(pool(padded, mask), pool(alone, torch.ones(1, 5, dtype=torch.bool)))
    empty = pool(torch.randn(2, 4, 8), torch.zeros(2, 4, dtype=torch.bool))
    assert torch.isfinite(empty).all() and empty.abs().sum() == 0


def test_attention_pool_can_find_the_one_frame_that_matters() -> None:
    """A frame carrying the class among many distractors: attention pooling learns it, mean pooling dilutes it."""
    torch.manual_seed(0)
    frames = torch.randn(256, 20, 8) * 0.1
    labels = torch.randint(0, 2, (256,))
    where = torch.randint(0, 20, (256,))
    frames[torch.arange(256), where, 0] = 1.0  # the "keyword" frame
    frames[torch.arange(256), where, 1] = labels.float() * 2 - 1
    mask = torch.ones(256, 20, dtype=torch.bool)
    head = TeacherHead(8, 2, kind="attnpool", dropout=0.0)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(head(frames, mask).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = (head(frames, mask).logits.argmax(-1) == labels).float().mean()
    assert accuracy > 0.95


def _teacher_for(examples: ExampleSet, width: int = 6) -> TeacherTargets:
    generator = torch.Generator().manual_seed(1)
    mixing = torch.randn(8, width, generator=generator)
    frames = [(item.T @ mixing).tanh() for item in examples.items]  # a fixed function of the input frames
    return TeacherTargets(embeddings=torch.stack([f.mean(0) for f in frames]), frames=frames)


def test_frame_distillation_pulls_every_frame_toward_the_teacher(tmp_path) -> None:
    train, valid = toy_examples(96, 0), toy_examples(30, 1)
    teacher = _teacher_for(train)
    weights = distillation_weights(DistillConfig(alpha=0.9))
    torch.manual_seed(0)
    result = fit(ToyClassifier(), train, valid, [Stage("distill", 6, weights)], _optim(), tmp_path / "run",
                 teacher=teacher, progress=False, distributed=False)
    l1 = [row["train_l1"] for row in result.history]
    assert l1[-1] < 0.7 * l1[0]
    assert result.projection_state is not None and result.projection_state["linear.weight"].shape == (6, 16)


def test_the_next_recipe_starts_with_the_projection_the_distilled_student_ended_with(tmp_path) -> None:
    """QUADS's first distil epoch continues from the distilled student's P, not a random one (else its L1
    jumps back up while P re-learns)."""
    train, valid = toy_examples(96, 0), toy_examples(30, 1)
    teacher = _teacher_for(train)
    weights = distillation_weights(DistillConfig(alpha=0.9))
    torch.manual_seed(0)
    student = ToyClassifier()
    first = fit(student, train, valid, [Stage("distill", 6, weights)], _optim(), tmp_path / "a", teacher=teacher,
                progress=False, distributed=False)
    ended = first.history[first.best_epoch - 1]["train_l1"]  # the kept epoch's student and its P
    runs = {}
    for name, carried in (("carried", first.projection_state), ("fresh", None)):
        copy = ToyClassifier()
        copy.load_state_dict(first.model_state)
        torch.manual_seed(0)
        runs[name] = fit(copy, train, valid, [Stage("distill", 1, weights)], _optim(lr=1e-4), tmp_path / name,
                         teacher=teacher, progress=False, distributed=False, projection_state=carried)
    assert abs(runs["carried"].history[0]["train_l1"] - ended) < 0.1 * ended
    assert runs["fresh"].history[0]["train_l1"] > 1.3 * ended


def test_intent_classifier_exposes_frames_and_pools_with_attention() -> None:
    from quads.models import build_student
    from quads.models.registry import build_classifier

    student = build_student("conv-50k", num_labels=3, pooling="attention").eval()
    features, mask = torch.randn(2, 80, 50), torch.ones(2, 50, dtype=torch.bool)
    output = student(features, mask)
    assert output.frames is not None and output.frames.shape[0] == 2
    assert output.frame_mask.shape == output.frames.shape[:2]
    rebuilt = build_classifier(student.config_dict())
    rebuilt.load_state_dict(student.state_dict())
    torch.testing.assert_close(rebuilt.eval()(features, mask).logits, output.logits)
    assert isinstance(student.pooling, AttentionPool) and isinstance(rebuilt, IntentClassifier)


def _optim(lr: float = 1e-2):
    from quads.config import OptimConfig

    # no masks: these tests read the frame L1 on the inputs the teacher's frames were made from
    return OptimConfig(epochs=6, batch_size=16, lr=lr, head_lr=0.0, warmup_epochs=0.0, grad_clip=0.0,
                       spec_augment=False)
