"""The procedural stage on micro models: a warm-up trained before a run and transferred, reused when done;
front-loaded mixing; procedural runs and their evaluation; the diagnostics; tokens to a target loss; bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import scarce.train.trainer as trainer
from scarce import runs
from scarce.checkpoint import checkpoint_dirs
from scarce.cli import app
from scarce.config import resolve_config
from scarce.data.sources import build_source, prepare_run_data
from scarce.errors import ScarceError
from scarce.evals.diagnostics import heldout_batch
from scarce.executors import Job, execute
from scarce.model import weight_group
from scarce.procedural.diagnostics import Addition
from scarce.studies.diagnose import data_fractions, diagnostic_config, record_diagnostic, tokens_to_loss
from scarce.train.warmup import find_warmup, warmup_config

MICRO = [
    "model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=4096",
    "data.eval_tokens=512", "train.batch_size=8", "train.log_every=4",
]
DYCK = ["procedural.task=dyck", "procedural.params.k=4", "procedural.params.length=32", "procedural.steps=4"]


def config(tmp_path, *overrides, name="run"):
    return resolve_config({"name": name, "runs_dir": str(tmp_path / "runs")}, [*MICRO, *overrides])


def weights(run_dir):
    (newest, *_) = checkpoint_dirs(run_dir / "checkpoints")
    return load_file(newest / "model.safetensors")


def test_a_warmup_stage_runs_first_is_linked_and_is_reused(tmp_path):
    full = config(tmp_path, *DYCK)
    run_dir = trainer.train(full, progress=False)
    warmup = find_warmup(full)
    assert warmup is not None and warmup != run_dir
    warm_summary, summary = runs.read_summary(warmup), runs.read_summary(run_dir)
    assert warm_summary["status"] == summary["status"] == "completed"
    assert warm_summary["steps"] == 4 and warm_summary["tokens_seen"] == 4 * 8 * 32
    assert runs.read_config(warmup)["data"]["source"] == "procedural"
    # the natural run keeps the config it was asked for (its key), and names the warm-up it started from
    assert runs.read_config(run_dir) == full.model_dump(mode="json")
    assert summary["init"]["from_run"] == warmup.name and summary["init"]["groups"] == ["attention", "mlp", "norms"]
    assert summary["init"]["tokens_seen"] == 4 * 8 * 32

    # another transfer, through an executor (as a study runs it): the same warm-up, not a second one
    attention_only = config(tmp_path, *DYCK, 'procedural.transfer=["attention"]', name="attention")
    result = execute(Job(attention_only))
    assert result.status == "completed"
    assert runs.read_summary(result.run_dir)["init"] == {**summary["init"], "groups": ["attention"]}
    rows = runs.load_runs_table(tmp_path / "runs", ["procedural.task=dyck"])
    assert sorted(r["data.source"] for r in rows) == ["epochs", "epochs", "procedural"]
    assert len(runs.load_runs_table(tmp_path / "runs", ["data.source=procedural"])) == 1
    # a run without warm-up compares with them in the same table
    trainer.train(config(tmp_path, name="plain"), progress=False)
    assert [r["name"] for r in runs.load_runs_table(tmp_path / "runs", ["procedural.task="])] == ["plain"]


def test_the_transferred_groups_start_as_the_warmups_and_the_rest_fresh(tmp_path):
    cfg = config(tmp_path, *DYCK, 'procedural.transfer=["attention", "norms"]', "procedural.embedding_init=mean")
    trainer.run_stages_before(cfg, trainer.train, trainer.resume, progress=False)
    warm = weights(find_warmup(cfg))
    run = trainer._set_up(cfg, None)  # the run built, before any step
    fresh = trainer._set_up(config(tmp_path, name="scratch"), None).model.state_dict()
    for name, value in run.model.state_dict().items():
        group = weight_group(name)
        if group in ("attention", "norms"):
            assert torch.equal(value, warm[name]), name
        elif group in ("embeddings", "head"):  # 512 BPE rows, each the mean of the warm-up's 9 Dyck embedding rows
            assert value.shape[0] == 512 and warm["embed.weight"].shape[0] == 9  # (the reference's "average")
            assert torch.allclose(value, warm["embed.weight"].mean(dim=0).expand_as(value))
        else:
            assert torch.equal(value, fresh[name]), name  # the same seed's fresh init


def test_a_warmup_key_leaves_out_the_natural_data_and_what_is_transferred(tmp_path):
    a = warmup_config(config(tmp_path, *DYCK))
    b = warmup_config(config(tmp_path, *DYCK, "data.corpus=python-stdlib", 'procedural.transfer=["mlp"]', "train.epochs=3"))
    c = warmup_config(config(tmp_path, *DYCK, "train.seed=1"))
    assert a == b and a != c
    assert warmup_config(config(tmp_path, *DYCK[:-1], "procedural.tokens=1024")) == a  # 4 steps of 8 × 32


def test_front_loading_puts_the_fraction_first_in_the_corpus_vocabulary(tmp_path):
    cfg = config(tmp_path, "procedural.task=sort", "procedural.params.length=8", "procedural.mode=mix",
                 "procedural.fraction=0.25")
    store = prepare_run_data(cfg)
    natural = build_source(config(tmp_path), store)
    source = build_source(cfg, store)
    first = source.steps - natural.steps
    assert first == round(0.25 * natural.steps / 0.75) > 0
    # the fraction of tokens, to the nearest whole step
    assert source.tokens_seen(first) / source.tokens_seen(source.steps) == pytest.approx(0.25, abs=0.5 / source.steps)
    assert source.unique_tokens == natural.unique_tokens
    batches = list(source)
    assert source.step == source.steps == len(batches)
    offset = store.vocab_size - 102  # sort's 102 tokens at the top of the 512
    for batch in batches[:first]:
        assert batch.inputs.min() >= offset and batch.loss_mask is not None and batch.loss_mask.any()
        assert batch.global_targets == int(batch.loss_mask.sum())
    for batch, plain in zip(batches[first:], natural, strict=True):
        assert torch.equal(batch.inputs, plain.inputs) and batch.loss_mask is None
    assert build_source(config(tmp_path, *cfg_overrides("procedural.fraction=0")), store).steps == natural.steps


def cfg_overrides(*extra):
    return ["procedural.task=sort", "procedural.params.length=8", "procedural.mode=mix", *extra]


def test_a_front_loaded_source_restores_its_position_and_refuses_another_config(tmp_path):
    cfg = config(tmp_path, *cfg_overrides("procedural.fraction=0.25"))
    store = prepare_run_data(cfg)
    whole = list(build_source(cfg, store))
    for stop in (3, 20):  # inside the procedural part, inside the natural one
        source = build_source(cfg, store)
        for _ in zip(range(stop), source):
            pass
        again = build_source(cfg, store)
        again.load_state_dict(json.loads(json.dumps(source.state_dict())))
        for batch, expected in zip(again, whole[stop:], strict=True):
            assert torch.equal(batch.inputs, expected.inputs) and torch.equal(batch.targets, expected.targets)
    other = build_source(config(tmp_path, *cfg_overrides("procedural.fraction=0.5")), store)
    with pytest.raises(ScarceError, match="procedural_steps"):
        other.load_state_dict(source.state_dict())


@pytest.mark.parametrize("overrides, message", [
    (["procedural.task=dyk"], "procedural.task: .*unknown procedural task 'dyk'"),
    ([*DYCK, 'procedural.transfer=["attention", "embeddings"]'], "procedural.transfer"),
    ([*DYCK, "procedural.transfer=[]"], "procedural.transfer"),
    ([*DYCK[:-1], "procedural.mode=mix", "procedural.fraction=1"], "procedural.fraction: Input should be less than 1"),
    ([*DYCK[:-1], "procedural.mode=mix", "procedural.fraction=-0.1"], "procedural.fraction"),
    ([*DYCK[:-1], "procedural.mode=mix"], "needs procedural.fraction"),
    ([*DYCK, "procedural.mode=mix", "procedural.fraction=0.1"], "procedural.steps belongs to a warm-up"),
    (DYCK[:-1], "set one of procedural.tokens, procedural.steps"),
    ([*DYCK, "procedural.tokens=100"], "set one of procedural.tokens, procedural.steps"),
    ([*DYCK, "init.from_run=runs/x"], "leave init.from_run unset"),
    (["procedural.steps=3"], "procedural.steps is set but procedural.task is not"),
    (["procedural.task=dyck", "procedural.params.depth=3", "procedural.steps=3"], "no parameter 'depth'"),
    (["data.source=procedural"], "name a task"),
    (["data.source=procedural", "procedural.task=dyck"], "set train.tokens"),
])
def test_bad_procedural_config_is_an_error_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(ScarceError, match=message):
        config(tmp_path, *overrides)


def test_a_procedural_run_uses_the_tasks_vocabulary_and_scores_held_out_accuracy(tmp_path):
    cfg = diagnostic_config("addition", {"digits": 2}, steps=3, batch_size=16, runs_dir=tmp_path / "runs")
    run_dir = trainer.train(cfg, progress=False)
    summary = runs.read_summary(run_dir)
    assert summary["unique_tokens"] == 0 and summary["steps"] == 3
    final = runs.read_metrics(run_dir)[-1]
    assert 0 <= final["val_accuracy"] <= 1 and 0 <= final["val_digit_accuracy"] <= 1
    answers = int(heldout_batch(Addition(digits=2)).loss_mask.sum())  # 2 or 3 answer digits and the stop each
    assert final["val_loss"] < 2 * np.log(31) and final["val_tokens"] == answers and 4000 * 3 < answers < 4000 * 4
    result = record_diagnostic(run_dir)
    assert result["accuracy"] == final["val_accuracy"] and result["warmup"] is None
    assert runs.read_summary(run_dir)["accuracy"] == final["val_accuracy"]
    assert json.loads((run_dir / "diagnostic.json").read_text()) == result
    (row,) = runs.load_runs_table(tmp_path / "runs", ["accuracy>=0"])
    assert row["run_id"] == run_dir.name


def test_diagnose_from_a_warmup_on_the_command_line(tmp_path):
    common = ["--steps", "2", "--batch-size", "8", "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    result = CliRunner().invoke(app, ["diagnose", "warmup", "dyck", "k=4", "length=16", *common])
    assert result.exit_code == 0, result.output
    (warm,) = (tmp_path / "runs").glob("diagnose-dyck-*")
    result = CliRunner().invoke(app, ["diagnose", "reversed-addition", "digits=3", "--warmup", str(warm),
                                      "--transfer", "attention,mlp", *common])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "digit accuracy" in result.output
    (run_dir,) = (tmp_path / "runs").glob("diagnose-addition_reversed-*")
    assert runs.read_summary(run_dir)["init"]["groups"] == ["attention", "mlp"]
    bad = CliRunner().invoke(app, ["diagnose", "haystack", "--warmup", str(warm), "--transfer", "attn", *common])
    assert bad.exit_code != 0 and "--transfer: 'attn'" in str(bad.exception)


def test_multiplication_has_the_references_recipe_as_its_preset():
    """task_multiplication.py: 4 layers, 8 heads, width 512 (GPT-2's 4x MLP), batch 64, 250 x 40,000 / 64 steps."""
    cfg = diagnostic_config("multiplication")
    model = cfg.model
    assert (model.n_layers, model.n_heads, model.d_model, model.ffn_hidden) == (4, 8, 512, 2048)
    assert cfg.train.batch_size == 64 and cfg.train.tokens == 156_250 * 64 * model.seq_len
    haystack = diagnostic_config("haystack")
    assert (haystack.model.d_model, haystack.train.batch_size) == (16, 1000)
    assert diagnostic_config("multiplication", batch_size=8).train.batch_size == 8


def test_diagnose_haystack_prints_the_papers_numbers_and_the_chance_levels(tmp_path):
    result = CliRunner().invoke(app, ["diagnose", "haystack", "--steps", "1", "--batch-size", "4", "--runs-dir",
                                      str(tmp_path / "runs"), "--no-progress", "--set", "train.compile=false"])
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # the console wraps lines
    for number in ("scratch 11.3%", "dyck 96.9%", "shuffled dyck 10.3%", "0.79%", "13.70%"):
        assert number in printed


def write_run(runs_dir, name, evals, init=None):
    """A run directory with evaluations at (step, val_loss): 100 tokens a step."""
    run_dir = runs_dir / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"train": {"batch_size": 10}, "model": {"seq_len": 10}}))
    runs.write_metrics(run_dir, [{"step": s, "val_loss": v} for s, v in evals])
    runs.write_summary(run_dir, {"run_id": name, "status": "completed", "final_val_loss": evals[-1][1], "init": init})
    return run_dir


def test_tokens_to_loss_interpolates_between_evaluations(tmp_path):
    base = write_run(tmp_path, "base", [(10, 5.0), (20, 4.0), (30, 3.0)])
    warm = write_run(tmp_path, "warm", [(10, 4.0), (20, 3.0), (30, 2.5)], {"from_run": "w", "tokens_seen": 640})
    assert tokens_to_loss(base, 3.5) == 2500 and tokens_to_loss(base, 5.5) == 1000 and tokens_to_loss(base, 2.0) is None
    target, rows = data_fractions([base, warm])
    assert target == 3.0
    assert [(r["tokens"], r["fraction"], r["warmup_tokens"]) for r in rows] == [(3000, 1.0, None), (2000, 2000 / 3000, 640)]
    result = CliRunner().invoke(app, ["diagnose", "tokens-to-loss", str(base), str(warm), "--target", "3.5"])
    assert result.exit_code == 0 and "60%" in result.output  # 1,500 of 2,500 tokens
