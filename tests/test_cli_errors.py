"""A standing check of the whole command line: every command, given bad input, exits with code 2 and one
line starting `error:` that names the flag, key, file or value, with no traceback, and creates or
changes no file. New commands add their rows to BAD_INPUTS (a test holds every command to at least one).

The commands run in this process, through `scarce.cli.main` as the console script runs them."""

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scarce import cli, runs
from scarce.config import resolve_config
from scarce.train.trainer import train

MICRO = ["model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=4096",
         "data.eval_tokens=512", "train.batch_size=8"]
POWER = ["--param", "E=1", "--param", "A=10", "--param", "alpha=0.3"]

# (command words and arguments, what the error line must name). Placeholders: {run} a finished run, {runs}
# its runs directory, {other_vocab} a copy of it on another vocabulary, {points} a points CSV, {bad_points}
# one with an infinite loss, {fit} a power-law fit, {file} a plain file, {tmp} a scratch folder.
BAD_INPUTS = [
    (["train", "optim.wd=0.8"], "optim.wd"),
    (["train", "{tmp}/missing.toml"], "missing.toml"),
    (["train", "--resume", "{run}", "optim.lr=1"], "--resume"),
    (["train", "--resume", "{tmp}/nowhere"], "nowhere"),
    (["train", "--restart", "{tmp}/nowhere"], "nowhere"),
    (["train", "runs_dir={file}", *MICRO], "{file}"),
    (["sizes", "--seq-len", "abc"], "--seq-len"),
    (["eval", "{run}", "--tasks", "kjv", "--limit", "0"], "--limit"),
    (["eval", "{run}", "--tasks", "kjv", "--limit", "-1"], "--limit"),
    (["eval", "{run}", "--tasks", "kjv", "--num-fewshot", "-1"], "--num-fewshot"),
    (["eval", "{run}", "--tasks", "kjv", "--out", "{tmp}/no/such/dir.json"], "--out"),
    (["eval", "{run}", "--eval-tokens", "0"], "--eval-tokens"),
    (["eval", "{tmp}/nowhere"], "nowhere"),
    (["runs", "{tmp}/runs[bold]old"], "runs[bold]old"),
    (["runs", "{runs}", "--where", "epochs>>3"], "epochs>>3"),
    (["runs", "{runs}", "--where", "no_such_key=1"], "no_such_key"),
    (["runs", "{runs}", "--csv", "{tmp}/no/such/dir.csv"], "--csv"),
    (["runs", "{runs}", "--columns", "run_id,no_such_key"], "no_such_key"),
    (["quickstart", "--runs-dir", "{file}"], "{file}"),
    (["export", "{run}", "--hf", "{file}"], "--hf"),
    (["export", "{tmp}/nowhere", "--hf", "{tmp}/hf"], "nowhere"),
    (["fit", "{tmp}/data[v2].csv"], "data[v2].csv"),
    (["fit", "{points}", "--law", "power", "--x", "x=D", "--json", "{tmp}/no/such/fit.json"], "--json"),
    (["fit", "{points}", "--law", "power", "--x", "x=D", "--plot", "{tmp}/fit.txt"], "--plot"),
    (["fit", "{points}", "--law", "no_such_law"], "no_such_law"),
    (["fit", "{points}", "--delta", "0"], "delta"),
    (["fit", "{bad_points}", "--tiered", "N,D"], "line 3"),
    (["fit", "--runs", "{tmp}/nowhere"], "nowhere"),
    (["laws", "extra"], "extra"),
    (["plan", "{fit}", "--flops", "-1"], "--flops"),
    (["plan", "{tmp}/no_fit.json", "--flops", "1e18"], "no_fit.json"),
    (["plan", "{fit}", "--flops", "1e18", "--json", "{tmp}/no/such/plan.json"], "--json"),
    (["efficiency", "--loss", "3", "--tokens", "0", *POWER], "--tokens"),
    (["efficiency", "--loss", "3", "--tokens", "-1e9", *POWER], "--tokens"),
    (["efficiency", "--loss", "nan", "--tokens", "1e6", *POWER], "--loss"),
    (["efficiency", "--loss", "0.5", "--tokens", "1e6", *POWER], "--loss"),
    (["efficiency", "--loss", "3", "--tokens", "1e6", "--param", "E=1", "--param", "A=10", "--param", "alpha=-0.23"],
     "alpha"),
    (["efficiency", "--loss", "3", "--tokens", "1e6", *POWER, "--json", "{tmp}/no/such/e.json"], "--json"),
    (["sweep", *MICRO, "--grid", "optim.wd=0.1,0.2"], "optim.wd"),
    (["sweep", "runs_dir={file}", *MICRO, "--grid", "optim.lr=0.1,0.2"], "{file}"),
    (["tune", *MICRO, "--lr", "a,b"], "--lr"),
    (["specialize", "{tmp}/none.toml", "--sizes", "micro", "--general-tokens", "1e5", "--domain-tokens", "1e4"],
     "none.toml"),
    (["plan-specialize", "{tmp}/no_fit.json", "--flops", "1e18"], "no_fit.json"),
    (["plan-specialize", "{tmp}/no_fit.json", "--flops", "nan"], "--flops"),
    (["sample", "{run}", "--tokens", "0", "--out", "{tmp}/s.jsonl"], "--tokens"),
    (["sample", "{run}", "--tokens", "8", "--out", "{tmp}/no/such/s.jsonl"], "--out"),
    (["sample", "{run}", "--tokens", "8", "--out", "{tmp}/s.jsonl", "--batch-size", "0"], "--batch-size"),
    (["distill", *MICRO, "--teacher", "{run}", "--synthetic-tokens", "0"], "--synthetic-tokens"),
    (["distill", *MICRO, "--teacher", "{run}", "--synthetic-tokens", "-5"], "--synthetic-tokens"),
    (["distill", *MICRO, "--teacher", "{run}", "--sample-batch-size", "0"], "--sample-batch-size"),
    (["distill", *MICRO, "--teacher", "{run}", "--json", "{tmp}/no/such/d.json"], "--json"),
    (["study", "kjv", "--flops", "1e15", "--out", "{tmp}/s", "--unique-tokens", "inf"], "--unique-tokens"),
    (["study", "kjv", "--flops", "1e15", "--out", "{tmp}/s", "--unique-tokens", "nan"], "--unique-tokens"),
    (["study", "kjv", "--flops", "0", "--out", "{tmp}/s"], "--flops"),
    (["study", "kjv", "--flops", "1e15", "--out", "{file}"], "--out"),
    (["data", "list", "extra"], "extra"),
    (["data", "prepare", "kjv", "--val-fraction", "2"], "val_fraction"),
    (["procedural", "list", "extra"], "extra"),
    (["procedural", "sample", "dyck", "length=100000000000"], "length"),
    (["procedural", "sample", "dyck", "k=64", "k=2"], "k=64"),
    (["procedural", "sample", "no_such_task"], "no_such_task"),
    (["procedural", "sample", "dyck", "--out", "{tmp}/no/such/d.jsonl"], "--out"),
    (["diagnose", "haystack", "no_such_param=1"], "no_such_param"),
    (["diagnose", "addition", "no_such_param=1"], "no_such_param"),
    (["diagnose", "reversed-addition", "no_such_param=1"], "no_such_param"),
    (["diagnose", "multiplication", "no_such_param=1"], "no_such_param"),
    (["diagnose", "warmup", "no_such_task"], "no_such_task"),
    (["diagnose", "tokens-to-loss", "{run}", "--target", "-1"], "--target"),
    (["diagnose", "tokens-to-loss", "{run}", "{other_vocab}"], "data.vocab_size"),
    (["ensemble", "train", *MICRO, "--vary", "no_such_seed"], "no_such_seed"),
    (["ensemble", "eval", "{run}", "--max-subsets", "0"], "--max-subsets"),
    (["ensemble", "eval", "{run}", "--json", "{tmp}/no/such/e.json"], "--json"),
    (["ensemble", "eval", "{run}", "--plot", "{tmp}/k.txt"], "--plot"),
]


def _command_of(argv: list[str]) -> str:
    return " ".join(argv[:2]) if argv[0] in cli.GROUPS else argv[0]


def test_every_command_has_a_bad_input_row():
    commands = set(cli.COMMANDS) | {f"{group} {name}" for group, (_, table) in cli.GROUPS.items() for name in table}
    covered = {_command_of(argv) for argv, _ in BAD_INPUTS}
    assert commands - covered == set(), "add a row to BAD_INPUTS for each new command"


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A finished micro run and the files the rows read, built once."""
    base = tmp_path_factory.mktemp("fixtures")
    run = train(resolve_config({"name": "r", "runs_dir": str(base / "runs")}, MICRO), progress=False)
    other = base / "other" / run.name
    shutil.copytree(run, other)
    config = runs.read_config(other)
    config["data"]["vocab_size"] = 300
    (other / runs.CONFIG_FILE).write_text(json.dumps(config))
    points, bad_points = base / "points.csv", base / "bad_points.csv"
    rows = [{"N": n, "D": d, "loss": 2 + 50 / n ** 0.3 + 80 / d ** 0.3} for n in (1e6, 4e6, 1.6e7) for d in (1e7, 4e7, 1.6e8)]
    for path, bad in ((points, False), (bad_points, True)):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, ["N", "D", "loss"])
            writer.writeheader()
            for i, row in enumerate(rows):
                writer.writerow({**row, "loss": "inf"} if bad and i == 1 else row)  # CSV line 3
    fit = base / "fit.json"
    result = CliRunner().invoke(cli.app, ["fit", str(points), "--json", str(fit)])  # chinchilla over N, D
    assert result.exit_code == 0, result.output
    file = base / "a_file"
    file.write_text("not a folder")
    return {"run": run, "runs": run.parent, "other_vocab": other, "points": points, "bad_points": bad_points,
            "fit": fit, "file": file, "base": base}


def _snapshot(*folders: Path) -> dict:
    """Every file under the folders with its size and modification time (SQLite's transient -wal/-shm aside)."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "folder"
            for folder in folders for p in sorted(folder.rglob("*")) if not p.name.endswith(("-wal", "-shm"))}


@pytest.mark.parametrize("argv,named", BAD_INPUTS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(argv, named, places, tmp_path, monkeypatch, capsys):
    values = {**{k: str(v) for k, v in places.items()}, "tmp": str(tmp_path / "scratch")}
    (tmp_path / "scratch").mkdir()
    argv = [a.format(**values) for a in argv]
    named = named.format(**values)
    monkeypatch.chdir(tmp_path / "scratch")  # a command's default paths (runs/) land here
    monkeypatch.setattr(sys, "argv", ["scarce", *argv])
    before = _snapshot(places["base"], tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[0].startswith("error:"), err
    assert named in err.replace("\n", " "), err
    assert _snapshot(places["base"], tmp_path) == before, "a bad input created or changed a file"


def test_error_messages_are_printed_literally_not_as_markup(capsys):
    # the batched executor's message names config sections in brackets
    with pytest.raises(SystemExit):
        cli._error("the batched executor needs no [distill], no [init]")
    assert capsys.readouterr().err == "error: the batched executor needs no [distill], no [init]\n"
