"""The `scarce` command as a user types it: configs and overrides, bad input, data, eval, runs, quickstart."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scarce import runs
from scarce.cli import app
from scarce.config import load_config
from scarce.errors import ScarceError

EXAMPLES = Path(__file__).parent.parent / "examples"
MICRO = ["model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=8192", "data.eval_tokens=1024",
         "train.batch_size=8"]
runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, (SystemExit, ScarceError)):
        raise result.exception
    return result


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(example):
    load_config(example)


def test_config_file_with_overrides_trains_and_saves_the_resolved_config(tmp_path):
    result = invoke("train", EXAMPLES / "micro.toml", f"runs_dir={tmp_path}", *MICRO, "optim.weight_decay=0.8",
                    "train.epochs=1", "--no-progress")
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.glob("micro-*")
    saved = runs.read_config(run_dir)
    assert saved["optim"]["weight_decay"] == 0.8 and saved["model"]["seq_len"] == 32  # overrides win
    assert saved["data"]["corpus"] == "kjv" and saved["name"] == "micro"  # the rest comes from the file
    assert runs.read_summary(run_dir)["status"] == "completed"

    # eval scores the same checkpoint on the same validation tokens: the same loss as the run's last eval
    result = invoke("eval", run_dir, "--eval-tokens", 1024)
    assert result.exit_code == 0, result.output
    assert f"{runs.read_summary(run_dir)['final_val_loss']:.4f}" in result.output

    result = invoke("runs", tmp_path, "--where", "optim.weight_decay=0.8", "--csv", tmp_path / "runs.csv")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "runs.csv") as f:
        (row,) = csv.DictReader(f)
    assert row["run_id"] == run_dir.name and float(row["unique_tokens"]) == (8192 - 1) // 32 * 32 + 1  # trained on


@pytest.mark.parametrize("override,named", [
    ("optim.wd=0.8", "optim.wd"),
    ("optim.weight_decay=-1", "optim.weight_decay"),
    ("model.size=huge", "model.size"),
    ("train.epochs=many", "train.epochs"),
    ("data.tokenizer=sentencepiece", "data.tokenizer"),
    ("train.data_seed=-1", "train.data_seed"),
    ("train.seed=-3", "train.seed"),
    ("data.split_seed=-1", "data.split_seed"),
    ("init.groups=['attention','ffn']", "init.groups"),
])
def test_bad_config_names_the_key_and_writes_nothing(tmp_path, override, named):
    result = invoke("train", f"runs_dir={tmp_path / 'runs'}", override)
    assert isinstance(result.exception, ScarceError)
    assert named in str(result.exception)
    assert not (tmp_path / "runs").exists()


def test_data_prepare_rejects_a_negative_split_seed_before_tokenizing(monkeypatch, tmp_path):
    monkeypatch.setenv("SCARCE_HOME", str(tmp_path / "home"))
    result = invoke("data", "prepare", "kjv", "--split-seed", -1)
    assert result.exit_code != 0 and "data.split_seed" in str(result.exception)
    assert not (tmp_path / "home").exists()


def test_data_prepare_reads_the_text_field_it_is_given(monkeypatch, tmp_path):
    monkeypatch.setenv("SCARCE_HOME", str(tmp_path / "home"))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"body": f"document {i} " * 5}) + "\n" for i in range(20)))
    result = invoke("data", "prepare", corpus, "--text-field", "text", "--tokenizer", "gpt2")
    assert "line 1: each line must be a JSON object with a `text` field" in str(result.exception)
    result = invoke("data", "prepare", corpus, "--text-field", "body", "--tokenizer", "gpt2", "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "bpe_sample_bytes" in str(invoke("data", "prepare", corpus, "--bpe-sample-mb", 0).exception)
    assert "not on 'dask'" in str(invoke("data", "prepare", corpus, "--executor", "dask").exception)


def test_bad_toml_file_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr = 1")
    assert f"{bad} is not valid TOML" in str(invoke("train", bad).exception)
    assert "does not exist" in str(invoke("train", tmp_path / "missing.toml").exception)


def test_console_script_prints_one_error_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "scarce.cli", "train", f"runs_dir={tmp_path}", "optim.wd=1"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid config") and "optim.wd" in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_takes_no_overrides(tmp_path):
    result = invoke("train", "optim.lr=1", "--resume", tmp_path)
    assert "--resume continues a run with its saved config" in str(result.exception)


def test_data_list_and_prepare_a_users_jsonl(tmp_path):
    assert "kjv" in invoke("data", "list").output
    corpus = tmp_path / "notes.jsonl"
    corpus.write_text("".join(f'{{"text": "note {i}: the quick brown fox jumps over the lazy dog."}}\n'
                              for i in range(50)))
    result = invoke("data", "prepare", corpus, "--vocab-size", 300)
    assert result.exit_code == 0, result.output
    assert "training tokens" in result.output and "vocabulary 300" in result.output
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert str(empty) in str(invoke("data", "prepare", empty).exception)


def test_quickstart_quick_trains_the_grid_prints_the_table_and_plots(tmp_path):
    result = invoke("quickstart", "--quick", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "validation loss" in result.output and "weight decay" in result.output
    rows = runs.load_runs_table(tmp_path)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert (tmp_path / "quickstart-loss-curves.png").stat().st_size > 10_000


def test_sizes_lists_the_ladder_with_parameter_counts():
    from scarce.model import model_shape

    output = invoke("sizes", "--vocab-size", 50258).output
    assert "micro" in output and "72m" in output
    assert f"{model_shape('72m', vocab_size=50258).non_embedding_params():,}" in output
