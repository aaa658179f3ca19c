"""Ensembles: the logit-averaged loss equals a hand computation and is at most the members' mean, sub-ensembles
are fixed, member configs vary the right seeds, `scarce ensemble train/eval` end to end, bad input fails."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from scarce import runs
from scarce.cli import app
from scarce.config import resolve_config
from scarce.data.store import EvalSample
from scarce.errors import ScarceError
from scarce.evals.ensemble import check_same_data, subset_losses, subsets_by_k
from scarce.model import Transformer, model_shape
from scarce.studies.ensemble import BatchedExecutor, member_configs, member_executor, member_heuristic, train_members

TINY = [
    "model.size=micro", "model.seq_len=16", "data.vocab_size=512", "data.unique_tokens=1024",
    "data.eval_tokens=64", "train.batch_size=8",
]


def micro(seed: int) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(model_shape("micro", vocab_size=40, seq_len=8)).eval()


def hand_loss(logit_sets: list[np.ndarray], targets: np.ndarray, combine: str) -> float:
    """Mean negative log-likelihood of `targets` under the combined members, in float64 numpy."""
    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    if combine == "logits":
        log_p = log_softmax(np.mean(logit_sets, axis=0))
    else:
        log_p = np.log(np.mean([np.exp(log_softmax(z)) for z in logit_sets], axis=0))
    return float(-log_p[np.arange(len(targets)), targets].mean())


@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_ensemble_loss_equals_hand_computation_and_beats_the_members_mean(combine):
    models = [micro(0), micro(1), micro(2)]
    tokens = np.random.default_rng(0).integers(0, 40, size=9)  # one window: 8 inputs, 8 targets
    sample = EvalSample(tokens, bytes=20, document_ids=np.arange(1))
    subsets = [(0,), (1,), (2,), (0, 1, 2), (0, 2)]
    losses = subset_losses(models, sample, 8, subsets, combine)
    with torch.no_grad():
        logits = [m(torch.tensor(tokens[None, :-1]))[0].double().numpy() for m in models]
    for subset, loss in zip(subsets, losses):
        assert loss == pytest.approx(hand_loss([logits[i] for i in subset], tokens[1:], combine), rel=1e-5)
    assert losses[3] <= np.mean(losses[:3])  # Jensen: averaging never loses on average


def test_subsets_are_all_when_few_and_a_fixed_seeded_sample_when_many():
    few = subsets_by_k(4, max_subsets=16)
    assert few[2] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)] and few[4] == [(0, 1, 2, 3)]
    many = subsets_by_k(10, max_subsets=6)
    assert len(many[1]) == 10  # every member alone, always
    assert len(many[5]) == 6 == len(set(many[5])) and many[5] == subsets_by_k(10, max_subsets=6)[5]
    assert all(len(s) == 5 and list(s) == sorted(s) for s in many[5])


def test_member_configs_vary_seeds_and_apply_the_heuristic(tmp_path):
    base = resolve_config({"name": "base", "runs_dir": str(tmp_path)}, ["train.seed=7", "train.epochs=4", "optim.weight_decay=0.8"])
    members = member_configs(base, 3, heuristic=True, study="ens")
    assert [(m.train.seed, m.train.data_seed) for m in members] == [(7, 0), (8, 1), (9, 2)]
    assert {m.study for m in members} == {"ens"} and {m.name for m in members} == {"ens"}
    assert {(m.train.epochs, m.optim.weight_decay) for m in members} == {(8, 0.4)}
    only_data = member_configs(base, 2, vary=("data_seed",))
    assert [(m.train.seed, m.train.data_seed) for m in only_data] == [(7, 0), (7, 1)]
    assert only_data[0].train.epochs == 4 and only_data[0].study == "base-ensemble"
    # caps: epochs ≤ 128 and weight decay ≥ 0.1, never moving a setting the wrong way
    assert member_heuristic(100, 0.1) == (128, 0.1)
    assert member_heuristic(200, 0.05) == (200, 0.05)
    assert member_heuristic(16, 0.15) == (32, 0.1)


@pytest.mark.parametrize("k, vary, match", [(0, ("seed",), "K ≥ 1"), (2, ("init",), "--vary"), (2, (), "--vary")])
def test_bad_member_settings_are_errors(tmp_path, k, vary, match):
    with pytest.raises(ScarceError, match=match):
        member_configs(resolve_config({"runs_dir": str(tmp_path)}), k, vary)


def test_members_on_different_data_are_an_error():
    a, b = resolve_config({}), resolve_config({}, ["data.vocab_size=1024"])
    with pytest.raises(ScarceError, match="data.vocab_size 8192 vs 1024"):
        check_same_data([("runs/a", a), ("runs/b", b)])
    store = SimpleNamespace(path="x", tokenizer=SimpleNamespace(fingerprint="f"))
    other = SimpleNamespace(path="y", tokenizer=SimpleNamespace(fingerprint="f"))
    with pytest.raises(ScarceError, match="token store"):
        check_same_data([("runs/a", a), ("runs/b", a)], [store, other])


def member_dirs(runs_dir):
    return sorted(p for p in runs_dir.iterdir() if (p / "config.json").is_file())


def test_ensemble_train_and_eval_end_to_end(tmp_path):
    runner = CliRunner()
    args = ["ensemble", "train", *TINY, f"runs_dir={tmp_path / 'runs'}", "name=tiny", "-k", "2", "--executor", "serial", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dirs = member_dirs(tmp_path / "runs")
    assert len(run_dirs) == 2 and {runs.read_config(d)["study"] for d in run_dirs} == {"tiny-ensemble"}
    assert (tmp_path / "runs" / "sweeps" / "tiny-ensemble" / "manifest.json").is_file()  # a study like a sweep
    out, plot = tmp_path / "ens.json", tmp_path / "ens.png"
    result = runner.invoke(app, ["ensemble", "eval", *map(str, run_dirs), "--json", str(out), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for member, run_dir in zip(report["members"], run_dirs):  # the same sample each member was scored on
        assert member["loss"] == pytest.approx(runs.read_summary(run_dir)["final_val_loss"], rel=1e-5)
    assert [p["k"] for p in report["losses_by_k"]] == [1, 2]
    assert report["law"]["fitted"] is False and "K ≥ 3" in report["law"]["reason"]
    assert plot.stat().st_size > 0 and math.isfinite(report["ensemble"]["bpb"])
    result = runner.invoke(app, ["ensemble", "eval", str(run_dirs[0]), str(run_dirs[0])])
    assert result.exit_code != 0 and "listed twice" in str(result.exception)


def test_a_second_ensemble_run_reuses_finished_members_and_trains_only_new_ones(tmp_path):
    base = resolve_config({"name": "tiny", "runs_dir": str(tmp_path)}, TINY)
    first = train_members(member_configs(base, 2), "serial", progress=False)
    again = train_members(member_configs(base, 3), "batched", progress=False)  # members 0, 1 reused; 2 trained
    assert again[:2] == first and len(member_dirs(tmp_path)) == 3
    assert runs.read_summary(again[2])["device"].endswith("(batched)")
    with pytest.raises(ScarceError, match="unknown executor 'fast'"):
        train_members(member_configs(base, 2), "fast", progress=False)
    with pytest.raises(ScarceError, match="--workers 2"):
        member_executor("batched", member_configs(base, 2), workers=2)
    assert isinstance(member_executor("batched", member_configs(base, 2)), BatchedExecutor)


def test_failed_members_are_a_clear_error_naming_them(tmp_path):
    base = resolve_config({"name": "bad", "runs_dir": str(tmp_path)}, [*TINY, "data.corpus=no-such-corpus"])
    with pytest.raises(ScarceError, match="2 of 2 members did not complete"):
        train_members(member_configs(base, 2), "serial", progress=False)


def test_k_law_is_fitted_from_three_sizes_and_plotted(tmp_path):
    from scarce.evals.ensemble_law import fit_ensemble_law, plot_ensemble

    points = [{"k": k, "loss": 3.34 + 0.25 / k**1.02} for k in (1, 2, 3, 4, 5)]
    law = fit_ensemble_law(points)
    assert law["fitted"] and law["parameters"]["E"]["value"] == pytest.approx(3.34, abs=1e-3)
    assert law["parameters"]["alpha"]["value"] == pytest.approx(1.02, abs=1e-2)
    assert plot_ensemble({"losses_by_k": points, "law": law, "combine": "logits"}, tmp_path / "k.png").stat().st_size > 0


def test_the_k_law_reports_identifiability_and_intervals_as_scarce_fit_does():
    from scarce.evals.ensemble_law import fit_ensemble_law

    rng = np.random.default_rng(0)
    points = [{"k": k, "loss": 3.34 + 0.25 / k**1.02 + rng.normal(0, 1e-3)} for k in range(1, 9)]
    law = fit_ensemble_law(points)
    assert law["identified"] and law["fit"]["unidentified"] == []
    low, high = law["derived"]["asymptote"]["interval"]
    assert low < law["parameters"]["E"]["value"] < high and high - low < 0.05
    exact = fit_ensemble_law(points[:3])  # three sizes, three parameters: a curve through every point
    assert exact["identified"] is False and "3 ensemble sizes for 3 parameters" in exact["reason"]
    assert exact["parameters"]["E"]["interval"] is None and exact["derived"]["asymptote"]["interval"] is None


def test_vmap_batched_members_train_to_the_weights_of_separate_runs(tmp_path):
    from scarce.checkpoint import load_latest_checkpoint
    from scarce.train.batched import train_batched
    from scarce.train.trainer import train

    base = resolve_config({"name": "b", "runs_dir": str(tmp_path / "batched")}, TINY)
    batched = train_batched(member_configs(base, 2), progress=False)
    separate = [train(c, progress=False) for c in member_configs(base.model_copy(update={"runs_dir": tmp_path / "separate"}), 2)]
    for a, b in zip(batched, separate):
        wa, wb = load_latest_checkpoint(a / "checkpoints")[1], load_latest_checkpoint(b / "checkpoints")[1]
        for name in wa:
            # vmap sums in another order; Adam's 1/sqrt(v) amplifies those ulps (1.6e-4 on the embeddings on
            # some CPUs): far below what a wrong member (another seed, a lost step) would give (~1e-1)
            error = (wa[name] - wb[name]).norm() / wb[name].norm()
            assert error < 5e-4, (name, error.item())
        assert runs.read_summary(a)["final_val_loss"] == pytest.approx(runs.read_summary(b)["final_val_loss"], rel=1e-4)
    assert not torch.equal(load_latest_checkpoint(batched[0] / "checkpoints")[1]["head.weight"],
                           load_latest_checkpoint(batched[1] / "checkpoints")[1]["head.weight"])


def test_batched_members_must_differ_only_by_seed(tmp_path):
    from scarce.train.batched import check_batchable

    base = resolve_config({"runs_dir": str(tmp_path)}, TINY)
    members = member_configs(base, 2)
    with pytest.raises(ScarceError, match="differ only"):
        check_batchable([members[0], resolve_config(members[1].model_dump(mode="json"), ["optim.lr=0.01"])])
    with pytest.raises(ScarceError, match="dropout"):
        check_batchable(member_configs(resolve_config({}, ["model.dropout=0.1"]), 2))


SINGLE_CORPUS = [o for o in TINY if not o.startswith("data.unique_tokens")]


@pytest.mark.parametrize(("key", "overrides"), [
    ("train.tokens", [*TINY, "train.tokens=16384"]),
    ("data.source", [*TINY, "data.source=procedural", "procedural.task=dyck", "train.tokens=1024"]),
    ("procedural.task", [*TINY, "procedural.task=dyck", "procedural.steps=2"]),
    ("data.domains", [*SINGLE_CORPUS, "data.domains.kjv=1.0"]),
])
def test_batched_members_refuse_settings_the_batched_loop_would_ignore(tmp_path, key, overrides):
    from scarce.train.batched import check_batchable

    with pytest.raises(ScarceError, match=key):
        check_batchable(member_configs(resolve_config({"runs_dir": str(tmp_path)}, overrides), 2))


def test_a_batched_member_that_diverges_is_written_diverged_as_its_separate_run_is(tmp_path):
    from scarce.train.batched import train_batched
    from scarce.train.trainer import train

    base = resolve_config({"name": "nan", "runs_dir": str(tmp_path)}, [*TINY, "optim.lr=1e4", "optim.grad_clip=0"])
    with pytest.raises(ScarceError, match="non-finite|became"):
        train(base.model_copy(update={"runs_dir": tmp_path / "separate"}), progress=False)
    separate = runs.read_summary(next((tmp_path / "separate").glob("nan*")))
    batched = [runs.read_summary(d) for d in train_batched(member_configs(base, 2), progress=False)]
    assert separate["status"] == "diverged"
    assert [s["status"] for s in batched] == ["diverged", "diverged"]
    assert batched[0]["steps"] == separate["steps"] and batched[0]["final_val_loss"] is None
    with pytest.raises(ScarceError, match="member 0: diverged"):
        train_members(member_configs(base.model_copy(update={"runs_dir": tmp_path / "study"}), 2), "batched", progress=False)
