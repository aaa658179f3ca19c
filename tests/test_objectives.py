"""Objectives: next-token prediction and masked-input regularization (MIR) exactly as specified, its two
executions, and MIR's independence from the data order."""

import math

import pytest
import torch
import torch.nn.functional as F

import scarce.train.trainer as trainer
from scarce.config import ObjectiveConfig, resolve_config
from scarce.data.batch import Batch
from scarce.errors import ScarceError
from scarce.model import Transformer, model_shape
from scarce.train.objectives import MaskedInput, NextToken

VOCAB, T = 50, 32


def mir(execution="two_pass", seed=0, **overrides):
    return MaskedInput(ObjectiveConfig(kind="mir", **overrides), VOCAB, seed=seed, execution=execution)


def random_batch(rows=4, seed=0, loss_mask=False):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (rows, T + 1), generator=g)
    mask = torch.rand(rows, T, generator=g) < 0.7 if loss_mask else None
    return Batch(tokens[:, :-1], tokens[:, 1:], mask, global_targets=rows * T if mask is None else int(mask.sum()))


def micro_model(extra=1):
    torch.manual_seed(0)
    return Transformer(model_shape("micro", vocab_size=VOCAB, seq_len=T, extra_input_tokens=extra))


def test_masks_spare_the_first_8_positions_and_average_a_quarter():
    objective = mir()
    masks = torch.cat([objective.mask(torch.zeros(64, 256, dtype=torch.long)) for _ in range(16)])
    assert not masks[:, :8].any()
    # r ~ U(0, 0.5) per sequence, then each position with probability r: E[fraction] = 0.25; over 1,024
    # sequences the mean of r has standard error 0.5/√12/√1024 ≈ 0.0045
    assert masks[:, 8:].float().mean().item() == pytest.approx(0.25, abs=0.02)
    per_sequence = masks[:, 8:].float().mean(dim=1)
    assert per_sequence.max() < 0.6 and per_sequence.min() < 0.05  # ratios spread over [0, 0.5]


def test_ratio_range_and_protected_prefix_are_configurable():
    masks = mir(mask_ratio_min=0.9, mask_ratio_max=0.9, protected_prefix=3).mask(torch.zeros(256, 64, dtype=torch.long))
    assert not masks[:, :3].any() and masks[:, 3:].float().mean().item() == pytest.approx(0.9, abs=0.01)


def test_masked_inputs_use_the_mask_token_and_targets_stay_clean():
    objective, batch = mir(), random_batch()
    seen = []

    def spy(inputs):
        seen.append(inputs.clone())
        return torch.zeros(*inputs.shape, VOCAB)

    for loss_fn in objective.passes(batch):
        loss_fn(spy)
    clean, masked = seen
    assert torch.equal(clean, batch.inputs) and (masked == VOCAB).any()
    assert torch.equal(masked[masked != VOCAB], batch.inputs[masked != VOCAB])
    assert not (batch.targets == VOCAB).any()  # the mask token is an input only: never a target
    model = micro_model()
    assert model.embed.num_embeddings == VOCAB + 1 and model.head.out_features == VOCAB


def test_mir_loss_is_clean_mean_plus_weighted_masked_mean():
    model, batch = micro_model(), random_batch()
    objective = mir(mir_weight=0.4)
    (clean_fn, masked_fn) = objective.passes(batch)
    total = (clean_fn(model)[0] + masked_fn(model)[0]) / batch.global_targets
    replay = mir(mir_weight=0.4)  # the same seed and counter: the same masks
    masked_inputs = torch.where(replay.mask(batch.inputs), VOCAB, batch.inputs)
    expected = F.cross_entropy(model(batch.inputs).flatten(0, 1), batch.targets.flatten()) + 0.4 * F.cross_entropy(
        model(masked_inputs).flatten(0, 1), batch.targets.flatten()
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("loss_mask", [False, True])
def test_two_pass_and_concatenated_give_the_same_loss_and_gradients(loss_mask):
    batch = random_batch(loss_mask=loss_mask)
    results = []
    for execution in ("two_pass", "concatenated"):
        model = micro_model()
        total, ntp = 0.0, 0.0
        for loss_fn in mir(execution).passes(batch):
            loss, clean = loss_fn(model)
            loss.backward()
            total += loss.item()
            ntp += clean.item() if clean is not None else 0.0
        results.append((total, ntp, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, ntp_a, grads_a), (loss_b, ntp_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and ntp_a == pytest.approx(ntp_b, rel=1e-5)
    for name, grad in grads_a.items():
        assert torch.linalg.norm(grads_b[name] - grad) <= 1e-4 * torch.linalg.norm(grad) + 1e-9, name


def test_a_loss_mask_restricts_every_objective_to_its_positions():
    model, batch = micro_model(extra=0), random_batch(loss_mask=True)
    ((loss, _),) = [fn(model) for fn in NextToken().passes(batch)]
    per_token = F.cross_entropy(model(batch.inputs).flatten(0, 1), batch.targets.flatten(), reduction="none")
    assert loss.item() == pytest.approx(per_token[batch.loss_mask.flatten()].sum().item(), rel=1e-5)


def test_masks_replay_after_a_state_round_trip():
    a = mir()
    inputs = torch.zeros(4, 64, dtype=torch.long)
    a.mask(inputs), a.mask(inputs)
    b = mir()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.mask(inputs), b.mask(inputs))
    assert not torch.equal(mir(seed=1).mask(inputs), mir(seed=0).mask(inputs))


def test_mir_leaves_the_batches_of_a_run_unchanged(tmp_path, monkeypatch):
    seen = {"ntp": [], "mir": []}
    real_step = trainer.train_step

    def recording_step(run, batch, lr):
        seen[run.config.objective.kind].append(torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1))
        return real_step(run, batch, lr)

    monkeypatch.setattr(trainer, "train_step", recording_step)
    for kind in ("ntp", "mir"):
        trainer.train(resolve_config({"name": kind, "runs_dir": str(tmp_path)}, [
            "model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=4096",
            "data.eval_tokens=256", "train.batch_size=8", f"objective.kind={kind}",
        ]), progress=False)
    assert len(seen["ntp"]) == len(seen["mir"]) > 1
    assert all(torch.equal(a, b) for a, b in zip(seen["ntp"], seen["mir"]))


@pytest.mark.parametrize("override,named", [
    ("objective.mir_weight=-0.1", "objective.mir_weight"),
    ("objective.mask_ratio_max=1.0", "objective.mask_ratio_max"),
    ("objective.mask_ratio_min=-0.1", "objective.mask_ratio_min"),
    ("objective.kind=dropout", "objective.kind"),
    ("objective.protected_prefix=-1", "objective.protected_prefix"),
])
def test_bad_objective_config_is_an_error_naming_the_key(override, named):
    with pytest.raises(ScarceError, match=named):
        resolve_config({}, [override])


def test_an_inverted_ratio_range_is_an_error():
    with pytest.raises(ScarceError, match="mask_ratio_min=0.4 must not exceed mask_ratio_max=0.2"):
        resolve_config({}, ["objective.mask_ratio_min=0.4", "objective.mask_ratio_max=0.2"])


def test_mir_doubles_the_recorded_training_flops(tmp_path):
    from scarce import runs

    overrides = ["model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=2048",
                 "data.eval_tokens=256", "train.batch_size=8", "train.log_every=1"]
    ntp_dir = trainer.train(resolve_config({"name": "a", "runs_dir": str(tmp_path)}, overrides), progress=False)
    mir_dir = trainer.train(resolve_config({"name": "b", "runs_dir": str(tmp_path)}, [*overrides, "objective.kind=mir"]),
                            progress=False)
    ntp, with_mir = runs.read_summary(ntp_dir), runs.read_summary(mir_dir)
    # the same shared initial weights (the mask row is drawn last) and batch: the first step's clean loss is NTP's
    ntp_log = [r for r in runs.read_metrics(ntp_dir) if "train_loss" in r]
    mir_log = [r for r in runs.read_metrics(mir_dir) if "train_loss" in r]
    assert mir_log[0]["train_loss"] == ntp_log[0]["train_loss"] and "train_masked_loss" not in ntp_log[0]
    for r in mir_log:  # the masked pass's loss and the combined loss, logged beside the clean one
        assert r["train_combined_loss"] == pytest.approx(r["train_loss"] + 0.4 * r["train_masked_loss"], rel=1e-6)
        assert r["train_masked_loss"] > 0
    assert with_mir["flops"] == 2 * ntp["flops"] and with_mir["tokens_seen"] == ntp["tokens_seen"]
    assert math.isfinite(with_mir["final_val_loss"])
    assert with_mir["params"] == ntp["params"] + 64  # one more embedding row of d_model 64
    assert [r["objective.kind"] for r in runs.load_runs_table(tmp_path, ["objective.kind=mir"])] == ["mir"]
