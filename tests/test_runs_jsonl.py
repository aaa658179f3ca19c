"""runs.jsonl: real micro runs written as one line each (config differences only, summary, eval curve, no
absolute path) read back as the rows load_runs_table gives; a damaged file is an error naming the line."""

import json
import warnings

import pytest

from scarce import runs
from scarce.config import resolve_config
from scarce.errors import ScarceError
from scarce.runs import run_key
from scarce.runs_jsonl import read_runs_jsonl, write_runs_jsonl
from scarce.train.trainer import train

MICRO = ["model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=2048",
         "data.eval_tokens=256", "train.batch_size=8", "train.epochs=2", "train.eval_every=4"]


def config(runs_dir, name, *overrides):
    return resolve_config({"name": name, "runs_dir": str(runs_dir)}, [*MICRO, *overrides])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three micro runs: a base run, one with another weight decay, one initialized from the first (a path
    into the runs directory); and the base config they share, as a study would pass it."""
    runs_dir = tmp_path_factory.mktemp("study") / "runs"
    first = train(config(runs_dir, "base"), progress=False)
    decayed = train(config(runs_dir, "decayed", "optim.weight_decay=0.8"), progress=False)
    started = train(config(runs_dir, "started", f"init.from_run={str(first)!r}"), progress=False)
    base = config(runs_dir, "base").model_dump(mode="json")
    out = runs_dir.parent / "runs.jsonl"
    assert write_runs_jsonl([started, decayed, first], base, out) == 3
    return runs_dir, base, out, {"base": first, "decayed": decayed, "started": started}


def records(path):
    """The run records, after the header line holding the base config."""
    header, *lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert list(header) == ["base_config"]
    return lines


def test_the_first_line_is_the_base_config_without_machine_paths(study):
    _, base, out, _ = study
    header = json.loads(out.read_text().splitlines()[0])["base_config"]
    assert header == {k: v for k, v in base.items() if k != "runs_dir"}


def test_one_line_per_run_sorted_holding_only_what_differs_from_the_base(study):
    runs_dir, _, out, dirs = study
    lines = records(out)
    assert [r["run_id"] for r in lines] == sorted(d.name for d in dirs.values())
    by_id = {r["run_id"]: r for r in lines}
    assert by_id[dirs["base"].name]["config"] == {}
    assert by_id[dirs["decayed"].name]["config"] == {"name": "decayed", "optim.weight_decay": 0.8}
    assert by_id[dirs["started"].name]["config"] == {"name": "started", "init.from_run": dirs["base"].name}
    for record in lines:
        assert list(record) == ["run_id", "run_key", "config", "summary", "curve"]
        summary = runs.read_summary(runs_dir / record["run_id"])
        assert record["summary"].pop("init") == summary.pop("init") or summary["run_id"] == dirs["started"].name
        assert record["summary"] == summary  # as written, but for paths (init.from_path, tested below)
        assert record["run_key"] == run_key(runs.read_config(runs_dir / record["run_id"]))  # as executors find runs
        assert "runs_dir" not in record["config"]


def test_the_curve_is_every_evaluation_in_step_order(study):
    runs_dir, _, out, _ = study
    for record in records(out):
        evaluated = [r for r in runs.read_metrics(runs_dir / record["run_id"]) if "val_loss" in r]
        steps = [r["step"] for r in record["curve"]]
        assert record["curve"] == evaluated and len(steps) >= 2 and steps == sorted(steps)
        assert record["curve"][-1]["val_loss"] == record["summary"]["final_val_loss"]


def test_no_absolute_path_anywhere(study):
    runs_dir, _, out, dirs = study
    text = out.read_text()
    assert str(runs_dir) not in text and str(runs_dir.parent) not in text
    started = next(r for r in records(out) if r["run_id"] == dirs["started"].name)
    # The run it started from is named by its run id, as the summary's from_run already does.
    assert started["summary"]["init"]["from_path"] == started["summary"]["init"]["from_run"] == dirs["base"].name


def test_rows_read_back_match_load_runs_table(study):
    runs_dir, base, out, _ = study
    table = {row["run_id"]: row for row in runs.load_runs_table(runs_dir)}
    rows = read_runs_jsonl(out)
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in runs.load_runs_table(runs_dir)]  # oldest first
    for row in rows:
        for key in runs.SUMMARY_KEYS:
            assert row.get(key) == table[row["run_id"]].get(key), key
        assert row["path"] == str(out) and len(row["run_key"]) == 16
    # The base filled in from the header: every config key reads as in the runs directory's table, paths made portable.
    for row in rows:
        paths = ("runs_dir", "path", "init.from_run", "init")  # dropped or made portable
        expected = {k: v for k, v in table[row["run_id"]].items() if k not in paths}
        assert {k: row.get(k) for k in expected} == expected
    assert runs.filter_rows(rows, ["optim.weight_decay=0.8"])[0]["name"] == "decayed"


def test_an_unreadable_run_is_skipped_with_a_warning(study, tmp_path):
    _, base, _, dirs = study
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / runs.CONFIG_FILE).write_text("{not json")
    with pytest.warns(UserWarning, match="broken-run"):
        count = write_runs_jsonl([dirs["base"], broken], base, tmp_path / "runs.jsonl")
    assert count == 1 and len(records(tmp_path / "runs.jsonl")) == 1


@pytest.mark.parametrize("damage, message", [
    (lambda line: line[: len(line) // 2], "not valid JSON"),
    (lambda line: json.dumps({k: v for k, v in json.loads(line).items() if k != "summary"}), "missing key.*summary"),
    (lambda line: "[1, 2]", "should hold a JSON object"),
    (lambda line: line, None),  # the header gone: the first run's line is not a base config
])
def test_a_damaged_line_is_an_error_naming_file_and_line(study, tmp_path, damage, message):
    _, _, out, _ = study
    lines = out.read_text().splitlines()
    if message is None:
        lines, message = lines[1:], "should be the header"
        number = 1
    else:
        lines[2], number = damage(lines[2]), 3
    damaged = tmp_path / "runs.jsonl"
    damaged.write_text("\n".join(lines) + "\n")
    with pytest.raises(ScarceError, match=rf"runs.jsonl, line {number}: {message}"):
        read_runs_jsonl(damaged)


def test_paths_outside_the_runs_directory_keep_only_their_name(tmp_path):
    run_dir = runs.create_run_dir(tmp_path / "runs", "r", {"data": {"corpus": "/home/someone/corpora/mine.txt"},
                                                           "runs_dir": "/elsewhere/runs"})
    runs.write_summary(run_dir, {"run_id": run_dir.name, "status": "completed", "source": "C:\\data\\mine.txt"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this hand-made config is no full RunConfig: no run_key, said in a warning
        write_runs_jsonl([run_dir], {}, tmp_path / "runs.jsonl")
    (record,) = records(tmp_path / "runs.jsonl")
    assert record["config"] == {"data.corpus": "mine.txt"} and record["summary"]["source"] == "mine.txt"
