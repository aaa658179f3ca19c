"""Initialization from another run: exactly the named weight groups are copied, the rest start fresh, the
source is recorded, and a group or architecture that does not fit is a clear error that writes nothing."""

import pytest
import torch
from safetensors.torch import load_file

from scarce import runs
from scarce.checkpoint import checkpoint_dirs
from scarce.config import resolve_config
from scarce.errors import ScarceError
from scarce.model import transferred, weight_group
from scarce.train.trainer import train

MICRO = ["model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=2048",
         "data.eval_tokens=256", "train.batch_size=8"]


def config(tmp_path, name, *overrides):
    return resolve_config({"name": name, "runs_dir": str(tmp_path / "runs")}, [*MICRO, *overrides])


def first_weights(run_dir):
    """The weights a run started from: train a 1-step run with lr ~0 and read its only checkpoint."""
    return load_file(checkpoint_dirs(run_dir / "checkpoints")[0] / "model.safetensors")


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    return train(config(root, "source", "train.seed=7"), progress=False)


def test_the_gpt2_blocks_biases_go_with_their_layers():
    """In GPT-2's block each bias is transferred with its weight: a projection's with its group (and "heads"
    with the q/k/v projection), a LayerNorm's with the norms (and "attn+ln" with the norm before attention)."""
    from scarce.model import Transformer, model_shape

    names = Transformer(model_shape("micro", vocab_size=40, seq_len=8, block="gpt2")).state_dict()
    groups = {n: weight_group(n) for n in names if n.endswith(".bias")}
    assert groups["blocks.0.attn.qkv.bias"] == groups["blocks.0.attn.out.bias"] == "attention"
    assert groups["blocks.0.mlp.up.bias"] == "mlp" and groups["blocks.0.attn_norm.bias"] == groups["norm.bias"] == "norms"
    assert sorted(n for n in names if transferred(n, ["heads"]))[:2] == ["blocks.0.attn.qkv.bias", "blocks.0.attn.qkv.weight"]
    assert transferred("blocks.1.attn_norm.bias", ["attn+ln"]) and not transferred("blocks.1.mlp_norm.bias", ["attn+ln"])


@pytest.mark.parametrize("groups", [["attention"], ["mlp", "norms"], ["attention", "mlp", "norms", "embeddings", "head"],
                                    ["heads"], ["attn+ln", "mlp"]])
def test_exactly_the_named_groups_are_copied(tmp_path, source_run, groups):
    source = first_weights(source_run)
    # lr so small that one AdamW step moves no weight by more than 1e-9: the checkpoint shows the start
    cfg = config(tmp_path, "target", f"init.from_run={str(source_run)!r}", f"init.groups={groups!r}",
                 "optim.lr=1e-12", "train.epochs=1", "train.seed=3")
    target = first_weights(train(cfg, progress=False))
    scratch = first_weights(train(config(tmp_path, "scratch", "optim.lr=1e-12", "train.epochs=1", "train.seed=3"), progress=False))
    copied = sorted(name for name in target if transferred(name, groups))
    if groups == ["heads"]:  # the reference's "heads": the q/k/v projection only
        assert copied == ["blocks.0.attn.qkv.weight", "blocks.1.attn.qkv.weight"]
    if "attn+ln" in groups:  # the reference's "attn+ln": attention and the norm before it
        assert "blocks.0.attn_norm.weight" in copied and "blocks.0.mlp_norm.weight" not in copied
    for name, value in target.items():
        if transferred(name, groups):
            torch.testing.assert_close(value, source[name], atol=1e-8, rtol=0)
        else:  # fresh: the same init as a from-scratch run with this seed, not the source's
            torch.testing.assert_close(value, scratch[name], atol=1e-8, rtol=0)
            assert not torch.allclose(value, source[name]) or value.dim() == 1, name  # norm gains start at 1 either way


def test_groups_are_assembled_from_several_runs_in_one_init(tmp_path, source_run):
    """The paper's best configuration: attention from one warm-up, the MLP from another."""
    other_run = train(config(tmp_path, "other", "train.seed=8"), progress=False)
    attention_from, mlp_from = first_weights(source_run), first_weights(other_run)
    cfg = config(tmp_path, "both", f"init.from_run={str(source_run)!r}", "init.groups=['attention']",
                 f"init.sources=[{{from_run={str(other_run)!r}, groups=['mlp']}}]", "optim.lr=1e-12", "train.epochs=1")
    run_dir = train(cfg, progress=False)
    start = first_weights(run_dir)
    for name, value in start.items():
        expected = {"attention": attention_from, "mlp": mlp_from}.get(weight_group(name))
        if expected is not None:
            torch.testing.assert_close(value, expected[name], atol=1e-8, rtol=0)
        elif value.dim() == 2:
            assert not torch.allclose(value, attention_from[name]) and not torch.allclose(value, mlp_from[name]), name
    (more,) = runs.read_summary(run_dir)["init"]["sources"]
    assert more["from_run"] == other_run.name and more["groups"] == ["mlp"]
    with pytest.raises(ScarceError, match="a group is copied from two runs"):
        config(tmp_path, "x", f"init.from_run={str(source_run)!r}", "init.groups=['mlp']",
               f"init.sources=[{{from_run={str(other_run)!r}, groups=['mlp']}}]")
    with pytest.raises(ScarceError, match=r"blocks.1.attn.qkv.weight would come from .* and from an earlier run"):
        train(config(tmp_path, "y", f"init.from_run={str(source_run)!r}", "init.groups=['attention']",
                     f"init.sources=[{{from_run={str(other_run)!r}, groups=['heads']}}]"), progress=False)


def test_the_source_and_groups_are_recorded(tmp_path, source_run):
    run_dir = train(config(tmp_path, "t", f"init.from_run={str(source_run)!r}", "init.groups=['attention','mlp']",
                           "init.embedding_init='mean'"), progress=False)
    init = runs.read_summary(run_dir)["init"]
    assert init["from_run"] == source_run.name and init["groups"] == ["attention", "mlp"]
    assert init["embedding_init"] == "mean" and init["checkpoint_step"] == runs.read_summary(source_run)["steps"]
    assert runs.read_config(run_dir)["init"]["groups"] == ["attention", "mlp"]


def test_mean_embedding_init_sets_every_row_to_the_sources_mean(tmp_path, source_run):
    """As the reference's "average" init: the input embedding's rows and the output head's."""
    source = first_weights(source_run)
    cfg = config(tmp_path, "mean", f"init.from_run={str(source_run)!r}", "init.groups=['attention']",
                 "init.embedding_init='mean'", "optim.lr=1e-12", "train.epochs=1")
    weights = first_weights(train(cfg, progress=False))
    expected = source["embed.weight"].mean(dim=0)
    for name in ("embed.weight", "head.weight"):
        torch.testing.assert_close(weights[name], expected.expand_as(weights[name]), atol=1e-8, rtol=0)


def test_a_mir_model_can_start_from_an_ntp_run_and_keeps_its_mask_row_fresh(tmp_path, source_run):
    source = first_weights(source_run)
    cfg = config(tmp_path, "mir", f"init.from_run={str(source_run)!r}", "objective.kind=mir", "optim.lr=1e-12",
                 "train.epochs=1")
    embed = first_weights(train(cfg, progress=False))["embed.weight"]
    assert embed.shape[0] == source["embed.weight"].shape[0] + 1
    torch.testing.assert_close(embed[:-1], source["embed.weight"], atol=1e-8, rtol=0)


@pytest.mark.parametrize("overrides,message", [
    (["model.d_model=32"], r"group 'attention' weight 'blocks.0.attn.qkv.weight' has shape \(192, 64\) in run .* but \(96, 32\)"),
    (["model.n_layers=3"], r"group 'attention' needs weight 'blocks.2.attn.qkv.weight'"),
    (["model.qk_norm=false"], r"this model lacks: blocks.0.attn.k_norm.weight"),
    (["data.vocab_size=600", "init.groups=['embeddings']"], r"group 'embeddings' weight 'embed.weight' has shape \(512, 64\)"),
    (["init.checkpoint_step=999"], r"init.checkpoint_step=999: .* has no checkpoint step_00000999"),
])
def test_an_architecture_that_does_not_fit_is_an_error_and_writes_no_run(tmp_path, source_run, overrides, message):
    with pytest.raises(ScarceError, match=message):
        train(config(tmp_path, "bad", f"init.from_run={str(source_run)!r}", "init.groups=['attention']", *overrides),
              progress=False)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("bad-*"))


def test_learned_positions_are_a_group_and_a_longer_context_hands_on_its_first_rows(tmp_path):
    """GPT-2-style absolute positions (model.positions = "learned"): their own weight group; from a source with
    a longer context the first rows are copied, as the procedural reference copies wpe."""
    from scarce.model import Transformer, model_shape

    source_run = train(config(tmp_path, "long", "model.positions='learned'", "model.seq_len=64"), progress=False)
    source = first_weights(source_run)
    cfg = config(tmp_path, "short", "model.positions='learned'", f"init.from_run={str(source_run)!r}",
                 "init.groups=['positions', 'attention']", "optim.lr=1e-12", "train.epochs=1", "train.seed=3")
    target = first_weights(train(cfg, progress=False))
    assert weight_group("pos_embed.weight") == "positions" and target["pos_embed.weight"].shape == (32, 64)
    torch.testing.assert_close(target["pos_embed.weight"], source["pos_embed.weight"][:32], atol=1e-8, rtol=0)
    rotary = Transformer(model_shape("micro", vocab_size=512, seq_len=32))
    assert rotary.pos_embed is None and "pos_embed.weight" not in rotary.state_dict()
    with pytest.raises(ScarceError, match="pos_embed.weight"):  # a rotary model cannot take them
        train(config(tmp_path, "rotary", f"init.from_run={str(source_run)!r}", "init.groups=['positions']"), progress=False)


def test_a_source_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(ScarceError, match="config.json"):
        train(config(tmp_path, "bad", f"init.from_run={str(tmp_path)!r}"), progress=False)
