"""Distillation: the real/synthetic mixture respects w and resumes exactly, the token-level objective is
NTP plus the KL to the teachers by hand, both modes train a student end to end, bad input fails."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scarce import runs
from scarce.config import resolve_config
from scarce.data.batch import Batch
from scarce.data.loader import EpochLoader
from scarce.data.mixture import MixtureSource, open_synthetic
from scarce.errors import ScarceError
from scarce.model import Transformer, model_shape
from scarce.studies.distill import check_teachers, retained_fraction, run_distillation
from scarce.train.objectives import TokenDistillation
from scarce.train.trainer import train

TINY = [
    "model.size=micro", "model.seq_len=16", "data.vocab_size=512", "data.unique_tokens=1024",
    "data.eval_tokens=64", "train.batch_size=8",
]
SYNTHETIC_OFFSET = 10_000  # synthetic token ids are shifted so a batch shows where it came from


def mixture(weight: float, seed: int = 0, per: str = "batch", world_size: int = 1, rank: int = 0) -> MixtureSource:
    real = EpochLoader(np.arange(2000), seq_len=10, batch_size=4, epochs=3, seed=1, rank=rank, world_size=world_size)
    return MixtureSource(real, np.arange(500) + SYNTHETIC_OFFSET, weight, seed, rank, world_size, per=per)


def is_synthetic(batch: Batch) -> bool:
    return bool((batch.inputs >= SYNTHETIC_OFFSET).all())


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.9])
def test_mixture_draws_synthetic_batches_at_fraction_w_and_keeps_the_real_epochs(weight):
    source = mixture(weight)
    batches = list(source)
    assert source.steps == len(batches) == math.ceil(source.real.steps / (1 - Fraction(str(weight))))
    drawn = [is_synthetic(b) for b in batches]
    assert sum(drawn) / len(drawn) == pytest.approx(weight, abs=1 / len(drawn))
    assert len(drawn) - sum(drawn) == source.real.steps  # exactly the real epochs, every real batch once
    real_rows = torch.cat([b.inputs[:, 0] for b in batches if not is_synthetic(b)])
    assert sorted(real_rows.tolist()) == sorted(np.tile(np.arange(199) * 10, 3).tolist())
    assert source.epochs_completed(source.steps) == 3
    if 0 < weight:  # spread over the run, not bunched at one end
        half = len(drawn) // 2
        assert abs(sum(drawn[:half]) - sum(drawn[half:])) < 0.2 * sum(drawn)
        assert [is_synthetic(b) for b in mixture(weight, seed=1)] != drawn


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.9])
def test_mixture_per_example_draws_each_sequence_at_fraction_w_and_keeps_the_real_epochs(weight):
    source = mixture(weight, per="example")
    batches = list(source)
    rows = torch.cat([b.inputs for b in batches])
    synthetic = (rows[:, 0] >= SYNTHETIC_OFFSET).tolist()
    assert len(rows) == math.ceil(597 / (1 - Fraction(str(weight))))  # 199 real sequences × 3 epochs
    assert len(rows) - sum(synthetic) == 597 and source.epochs_completed(source.steps) == 3
    assert sorted(rows[~(rows[:, 0] >= SYNTHETIC_OFFSET), 0].tolist()) == sorted(np.tile(np.arange(199) * 10, 3).tolist())
    assert sum(b.global_targets for b in batches) == len(rows) * 10 == source.tokens_seen(source.steps)
    if weight > 0:  # batches of both kinds of sequence, unlike per="batch"
        assert any(0 < (b.inputs[:, 0] >= SYNTHETIC_OFFSET).sum() < len(b.inputs) for b in batches)
        assert not any(0 < (b.inputs[:, 0] >= SYNTHETIC_OFFSET).sum() < len(b.inputs) for b in mixture(weight))


def test_mixture_ranks_split_each_step_without_overlap():
    for per in ("example", "batch"):
        whole = [b.inputs for b in mixture(0.5, per=per)]
        shares = [[b.inputs for b in mixture(0.5, per=per, world_size=2, rank=r)] for r in range(2)]
        for step, rows in enumerate(whole):
            split = torch.cat([shares[0][step], shares[1][step]])
            assert sorted(map(tuple, split.tolist())) == sorted(map(tuple, rows.tolist()))


@pytest.mark.parametrize("per", ["example", "batch"])
def test_mixture_resumes_exactly_from_its_state_dict(per):
    whole = list(mixture(0.75, per=per))
    first = mixture(0.75, per=per)
    batches = iter(first)
    head = [next(batches) for _ in range(37)]
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    resumed = mixture(0.75, per=per)
    resumed.load_state_dict(state)
    for a, b in zip(whole, head + list(resumed), strict=True):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    with pytest.raises(ScarceError, match="weight"):
        mixture(0.5).load_state_dict(state)


@pytest.mark.parametrize("weight", [1.0, -0.1, 1.5])
def test_synthetic_fraction_outside_0_1_is_an_error(tmp_path, weight):
    with pytest.raises(ScarceError, match="w must be in"):
        mixture(weight)
    with pytest.raises(ScarceError, match="distill.*weight"):
        resolve_config({}, ["distill.kind=sequence", f"distill.weight={weight}", f"distill.synthetic='{tmp_path / 's.bin'}'"])


def test_token_objective_is_ntp_plus_kl_to_the_averaged_teachers():
    torch.manual_seed(0)
    shape = model_shape("micro", vocab_size=30, seq_len=8)
    student, teachers = Transformer(shape), [Transformer(shape).eval(), Transformer(shape).eval()]
    inputs, targets = torch.randint(0, 30, (3, 8)), torch.randint(0, 30, (3, 8))
    batch = Batch(inputs, targets, None, 24)
    log_q = F.log_softmax(student(inputs), -1)
    log_p = F.log_softmax(sum(t(inputs) for t in teachers) / 2, -1)  # softmax of the mean logits
    ntp = F.cross_entropy(log_q.flatten(0, 1), targets.flatten(), reduction="sum")
    kl = (log_p.exp() * (log_p - log_q)).sum()
    (loss_fn,) = TokenDistillation(0.3, teachers, shape.train_flops_per_token()).passes(batch)
    loss, ntp_sum = loss_fn(student)
    torch.testing.assert_close(ntp_sum, ntp)
    torch.testing.assert_close(loss, 0.7 * ntp + 0.3 * kl)
    loss.backward()  # gradients reach the student only
    assert student.head.weight.grad is not None and all(p.grad is None for t in teachers for p in t.parameters())
    (self_fn,) = TokenDistillation(1.0, [student], shape.train_flops_per_token()).passes(batch)
    assert self_fn(student)[0].item() == pytest.approx(0.0, abs=1e-4)  # KL to itself


def test_retained_fraction():
    assert retained_fraction(single=3.5, ensemble=3.3, student=3.4) == pytest.approx(0.5)
    assert retained_fraction(single=3.5, ensemble=3.5, student=3.4) is None


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    return [
        train(resolve_config({"name": f"t{i}", "runs_dir": str(root / "runs")}, [*TINY, f"train.seed={i}"]), progress=False)
        for i in range(2)
    ]


def test_sequence_distillation_end_to_end(tmp_path, teachers):
    base = resolve_config({"name": "student", "runs_dir": str(tmp_path / "runs")}, TINY)
    report = run_distillation(base, teachers, "sequence", weight=0.5, synthetic_tokens=200, sample_batch_size=8, progress=False)
    student = report["student"]
    config, summary = runs.read_config(student), runs.read_summary(student)
    assert config["distill"]["kind"] == "sequence" and config["distill"]["weight"] == 0.5
    assert config["distill"]["synthetic"] == report["synthetic"] and config["study"] == "student-distill"
    real_steps = -(-((1024 - 1) // 16) // 8)
    assert summary["steps"] == 2 * real_steps and summary["epochs_completed"] == 1
    assert summary["tokens_seen"] == 2 * ((1024 - 1) // 16) * 16  # per example: as many synthetic sequences as real at w = ½
    assert report["loss_single"] == pytest.approx(np.mean([t["loss"] for t in report["teachers"]]))
    gain = report["loss_single"] - report["loss_ensemble"]
    assert report["retained_fraction"] == pytest.approx((report["loss_single"] - report["loss_student"]) / gain)
    # the synthetic tokens are reused, and they belong to the teachers' vocabulary
    meta = json.loads((tmp_path / "runs" / "synthetic" / (report["synthetic"].rsplit("/", 1)[1].replace(".bin", ".json"))).read_text())
    assert meta["tokens"] >= 200 and meta["temperature"] == 1.0
    assert run_distillation(base, teachers, "sequence", 0.5, synthetic_tokens=200, progress=False)["synthetic"] == report["synthetic"]
    from scarce.data.store import prepare_store

    store = prepare_store("kjv", vocab_size=512)
    meta["tokenizer_fingerprint"] = "another"
    path = tmp_path / "foreign.bin"
    path.write_bytes(open(report["synthetic"], "rb").read())
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ScarceError, match="another vocabulary"):
        open_synthetic(path, store)


def test_token_distillation_end_to_end(tmp_path, teachers):
    base = resolve_config({"name": "student", "runs_dir": str(tmp_path / "runs")}, TINY)
    report = run_distillation(base, teachers, "token", progress=False)
    config = runs.read_config(report["student"])
    assert config["distill"] == {"kind": "token", "weight": 0.5, "synthetic": None, "teachers": [str(t) for t in teachers],
                                 "mix": "example"}
    summary = runs.read_summary(report["student"])
    assert summary["status"] == "completed" and summary["flops"] > summary["flops_per_token"] * summary["tokens_seen"]


def test_a_token_student_given_relative_teacher_paths_resumes_from_another_directory(tmp_path, teachers, monkeypatch):
    from scarce.train.trainer import resume

    monkeypatch.chdir(teachers[0].parent)
    student = train(resolve_config({"name": "student", "runs_dir": str(tmp_path / "runs")},
                                   [*TINY, "distill.kind=token", "distill.weight=0.5",
                                    f"distill.teachers=['{teachers[0].name}', '{teachers[1].name}']"]), progress=False)
    assert runs.read_config(student)["distill"]["teachers"] == [str(t.resolve()) for t in teachers]
    runs.write_summary(student, {**runs.read_summary(student), "status": "running"})  # as if killed before the end
    monkeypatch.chdir(tmp_path)
    resume(student, progress=False)
    assert runs.read_summary(student)["status"] == "completed"


def test_a_teacher_with_another_vocabulary_is_an_error(tmp_path, teachers):
    other = resolve_config({"name": "student", "runs_dir": str(tmp_path / "runs")}, [*TINY, "data.vocab_size=384"])
    with pytest.raises(ScarceError, match="data.vocab_size 384 vs 512"):
        check_teachers(other, teachers)
    token = resolve_config(other.model_dump(mode="json"), ["distill.kind=token", f"distill.teachers=['{teachers[0]}']"])
    with pytest.raises(ScarceError, match="data.vocab_size 384 vs 512"):
        train(token, progress=False)
    assert not list((tmp_path / "runs").glob("student-*"))  # no run written (runs_dir itself is checked writable first)


def test_the_synthetic_pool_is_sized_for_at_most_three_passes():
    """w·E·U/((1 − w)·pool) passes: the default pool makes it 3 (the study's too); the old default pool of U
    tokens meant 9·E passes at w = 0.9."""
    from scarce.studies.distill import MAX_PASSES, pool_tokens, synthetic_passes
    from scarce.studies.study.design import synthetic_tokens
    from scarce.studies.study.interventions import DISTILL_WEIGHT

    for unique, epochs, weight in [(20_000, 16, 0.9), (80_000, 4, 0.75), (1_000, 1, 0.5)]:
        pool = pool_tokens(unique, epochs, weight)
        assert synthetic_passes(pool, unique, epochs, weight) <= MAX_PASSES
        assert synthetic_passes(pool - 1, unique, epochs, weight) > MAX_PASSES * 0.999
    assert synthetic_passes(20_000, 20_000, 16, 0.9) == pytest.approx(9 * 16)
    assert synthetic_passes(synthetic_tokens(18_432, 16), 18_432, 16, DISTILL_WEIGHT) <= MAX_PASSES
