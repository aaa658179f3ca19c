"""WSD decay branches: a long constant-lr run checkpointed at step s, branched into a decay of d steps,
ends with exactly the weights of a direct WSD run of s + d steps (CPU, bit for bit)."""

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from scarce import runs
from scarce.checkpoint import checkpoint_dirs
from scarce.cli import app
from scarce.config import resolve_config
from scarce.errors import ScarceError
from scarce.train.init import branch_config
from scarce.train.trainer import train

STEP_TOKENS = 8 * 32  # batch_size · seq_len
# dropout draws from the RNG and grad_accum splits batches: the branch must carry both exactly
MICRO = [
    "model.size=micro", "model.seq_len=32", "model.dropout=0.1", "data.vocab_size=512", "data.unique_tokens=4096",
    "data.eval_tokens=512", "train.batch_size=8", "train.grad_accum=2", "train.log_every=4", "optim.schedule=wsd",
    f"optim.warmup_tokens={3 * STEP_TOKENS}",
]


def config(tmp_path, *overrides, name="run"):
    return resolve_config({"name": name, "runs_dir": str(tmp_path / "runs")}, [*MICRO, *overrides])


def weights(run_dir, step=None):
    dirs = checkpoint_dirs(run_dir / "checkpoints")
    chosen = dirs[0] if step is None else next(d for d in dirs if d.name == f"step_{step:08d}")
    return load_file(chosen / "model.safetensors")


def assert_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    """40 steps (more than the 15-step epoch: the branch crosses an epoch), checkpoints kept at 12 and 20."""
    tmp = tmp_path_factory.mktemp("trunk")
    return train(config(tmp, f"train.tokens={40 * STEP_TOKENS}", f"optim.decay_tokens={8 * STEP_TOKENS}",
                        "train.checkpoint_steps=[12, 20]", "train.keep_checkpoints=1", name="trunk"), progress=False)


def test_a_decay_branch_equals_the_direct_wsd_run(trunk, tmp_path):
    kept = [d.name for d in checkpoint_dirs(trunk / "checkpoints")]
    assert kept == ["step_00000040", "step_00000020", "step_00000012"]  # pinned steps outlive keep_checkpoints
    direct = train(config(tmp_path, f"train.tokens={26 * STEP_TOKENS}", f"optim.decay_tokens={6 * STEP_TOKENS}",
                          name="direct"), progress=False)
    result = CliRunner().invoke(app, ["train", "--branch-from", f"{trunk}@20", f"optim.decay_tokens={6 * STEP_TOKENS}",
                                      f"runs_dir={tmp_path / 'runs'}", "--no-progress"])
    assert result.exit_code == 0, result.output
    (branch,) = [d for d in (tmp_path / "runs").iterdir() if d.name.startswith("trunk-branch20")]
    assert_equal(weights(branch), weights(direct))
    summary, direct_summary = runs.read_summary(branch), runs.read_summary(direct)
    assert summary["steps"] == 26 and summary["tokens_seen"] == direct_summary["tokens_seen"] == 26 * STEP_TOKENS
    assert summary["final_val_loss"] == direct_summary["final_val_loss"]
    assert summary["init"]["mode"] == "continue" and summary["init"]["checkpoint_step"] == 20
    # the trunk's step 20 is not the branch's: the branch really decayed
    assert not torch.equal(weights(trunk, 20)["head.weight"], weights(branch)["head.weight"])


def test_copying_weights_alone_is_not_a_branch(trunk, tmp_path):
    """Weights without the optimizer state, data position and RNG diverge from the direct run: why
    init.mode='continue' exists."""
    direct = train(config(tmp_path, f"train.tokens={18 * STEP_TOKENS}", f"optim.decay_tokens={6 * STEP_TOKENS}",
                          name="direct"), progress=False)
    branch = train(branch_config(f"{trunk}@12", [f"optim.decay_tokens={6 * STEP_TOKENS}", f"runs_dir={tmp_path / 'b'}"]),
                   progress=False)
    assert_equal(weights(branch), weights(direct))
    copied = train(config(tmp_path, f"train.tokens={6 * STEP_TOKENS}", f"init.from_run='{trunk}'", "init.checkpoint_step=12",
                          f"optim.decay_tokens={6 * STEP_TOKENS}", name="copied"), progress=False)
    assert not torch.equal(weights(copied)["head.weight"], weights(direct)["head.weight"])


@pytest.mark.parametrize("overrides,message", [
    (["data.unique_tokens=2048"], "data.unique_tokens is 4096 there, 2048 here"),
    (["optim.lr=0.001"], "optim.lr"),
    # a decay that starts before the branch point rewrites the schedule the trunk already trained on
    (["train.tokens=5632", f"optim.decay_tokens={12 * STEP_TOKENS}"], "learning rate at step 11"),
])
def test_a_branch_that_is_not_a_continuation_is_refused_and_writes_nothing(trunk, tmp_path, overrides, message):
    with pytest.raises(ScarceError, match=message):
        train(branch_config(f"{trunk}@20", [*overrides, f"runs_dir={tmp_path / 'runs'}"]), progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_missing_branch_point_names_the_kept_checkpoints(trunk, tmp_path):
    with pytest.raises(ScarceError, match="no checkpoint step_00000016.*step_00000020"):
        train(branch_config(f"{trunk}@16", [f"runs_dir={tmp_path}"]), progress=False)
    with pytest.raises(ScarceError, match="RUN_DIR@STEP"):
        branch_config(f"{trunk}", [])
