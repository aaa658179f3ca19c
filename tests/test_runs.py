import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing

import pytest
from rich.console import Console

from scarce.commands.runs import DEFAULT_TABLE_COLUMNS, HIDE_FIRST, runs_table
from scarce.errors import ScarceError
from scarce.runs import (
    RunIndex,
    append_metrics,
    create_run_dir,
    export_csv,
    load_runs_table,
    new_run_id,
    read_config,
    read_metrics,
    read_summary,
    write_metrics,
    write_summary,
)


def _config(weight_decay=0.1, size="micro", epochs=4):
    return {
        "name": "wd",
        "data": {"corpus": "kjv", "unique_tokens": 200_000},
        "model": {"size": size},
        "optim": {"lr": 0.003, "weight_decay": weight_decay},
        "train": {"epochs": epochs, "seed": 0},
    }


def _summary(run_dir, status="completed", loss=3.5, params=1_000_000):
    return {
        "run_id": run_dir.name, "name": "wd", "status": status,
        "created_at": "2026-01-01T00:00:00", "finished_at": "2026-01-01T00:10:00",
        "code_version": "abc123", "device": "cpu", "params": params, "non_embedding_params": params // 2,
        "flops_per_token": 6 * params, "flops": 6 * params * 800_000, "unique_tokens": 200_000,
        "epochs": 4, "epochs_completed": 4, "tokens_seen": 800_000, "steps": 100,
        "final_val_loss": loss, "best_val_loss": loss - 0.1, "final_val_bpb": 1.2, "wall_seconds": 61.5,
    }


def _finished_run(runs_dir, status="completed", loss=3.5, **config):
    run_dir = create_run_dir(runs_dir, "wd", _config(**config))
    write_summary(run_dir, _summary(run_dir, status=status, loss=loss))
    RunIndex(runs_dir).record(run_dir)
    return run_dir


def test_create_run_dir_builds_the_layout_and_leaves_no_temp_dir(tmp_path):
    config = _config()
    run_dir = create_run_dir(tmp_path / "runs", "wd 0.1/x", config)
    assert run_dir.parent == tmp_path / "runs"
    assert run_dir.name.startswith("wd-0.1-x-")  # unsafe characters replaced
    assert json.loads((run_dir / "config.json").read_text()) == config
    assert (run_dir / "checkpoints").is_dir() and not any((run_dir / "checkpoints").iterdir())
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]


def test_run_ids_are_unique_and_their_start_times_increase():
    ids = [new_run_id("a") for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(re.fullmatch(r"a-\d{8}-\d{6}\.\d{3}-[0-9a-f]{4}", i) for i in ids)
    stamps = [i[2:-5] for i in ids]
    assert stamps == sorted(stamps) and len(set(stamps)) == 200  # strictly increasing, even within a ms


def test_runs_started_in_the_same_second_list_in_start_order(tmp_path):
    started = [_finished_run(tmp_path, weight_decay=wd / 10).name for wd in range(8)]
    # _summary gives every run the same created_at (whole seconds, as the trainer writes it)
    assert [row["run_id"] for row in load_runs_table(tmp_path)] == started
    RunIndex(tmp_path).reindex()
    assert [row["run_id"] for row in load_runs_table(tmp_path)] == started


def test_metrics_survive_a_torn_last_line_and_appending_after_it(tmp_path):
    run_dir = create_run_dir(tmp_path, "m", {})
    append_metrics(run_dir, {"step": 1, "loss": 4.0})
    append_metrics(run_dir, {"step": 2, "loss": 3.0})
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a process killed mid-write
    assert read_metrics(run_dir) == [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.0}]

    # A resumed run keeps appending: the torn line must not swallow the new record.
    append_metrics(run_dir, {"step": 3, "loss": 2.5})
    with pytest.warns(UserWarning, match="line 3"):
        records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3]


def test_metrics_strings_may_hold_unicode_line_separators(tmp_path):
    run_dir = create_run_dir(tmp_path, "m", {})
    record = {"step": 1, "note": "a\u2028b\u2029c\x85d"}
    (run_dir / "metrics.jsonl").write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    append_metrics(run_dir, {"step": 2})
    assert read_metrics(run_dir) == [record, {"step": 2}]


def test_resume_rewrites_metrics_then_keeps_appending(tmp_path):
    run_dir = create_run_dir(tmp_path, "m", {})
    for step in (1, 2, 3):
        append_metrics(run_dir, {"step": step})
    # Resuming from the step-2 checkpoint: step 3 will be logged again, so drop it.
    write_metrics(run_dir, [r for r in read_metrics(run_dir) if r["step"] <= 2])
    append_metrics(run_dir, {"step": 3, "resumed": True})
    assert read_metrics(run_dir) == [{"step": 1}, {"step": 2}, {"step": 3, "resumed": True}]


def test_summary_and_config_read_back_and_a_missing_one_is_named(tmp_path):
    run_dir = create_run_dir(tmp_path, "s", _config())
    assert read_config(run_dir) == _config()
    with pytest.raises(ScarceError, match="summary.json does not exist"):
        read_summary(run_dir)
    write_summary(run_dir, _summary(run_dir))
    assert read_summary(run_dir) == _summary(run_dir)


def test_record_and_rows_roundtrip_with_flattened_config(tmp_path):
    run_dir = _finished_run(tmp_path, weight_decay=0.05, size="mini")
    [row] = RunIndex(tmp_path).rows()
    assert row["run_id"] == run_dir.name
    assert row["status"] == "completed"
    assert row["params"] == 1_000_000 and isinstance(row["params"], int)
    assert row["flops"] == 6 * 1_000_000 * 800_000
    assert row["final_val_loss"] == 3.5
    assert row["optim.weight_decay"] == 0.05
    assert row["model.size"] == "mini"
    assert row["data.corpus"] == "kjv"
    assert row["train.epochs"] == 4
    assert row["path"] == str(run_dir)


def test_flops_beyond_64_bit_integers_are_indexed(tmp_path):
    run_dir = create_run_dir(tmp_path, "big", {})
    write_summary(run_dir, {**_summary(run_dir), "flops": 6 * 70_000_000_000 * 15_000_000_000_000})
    RunIndex(tmp_path).record(run_dir)
    assert RunIndex(tmp_path).rows()[0]["flops"] == 6 * 70_000_000_000 * 15_000_000_000_000


def test_recording_a_run_again_updates_its_one_row(tmp_path):
    run_dir = create_run_dir(tmp_path, "wd", _config())
    index = RunIndex(tmp_path)
    write_summary(run_dir, _summary(run_dir, status="running"))
    index.record(run_dir)
    write_summary(run_dir, _summary(run_dir, status="diverged"))
    index.record(run_dir)
    assert [(r["run_id"], r["status"]) for r in index.rows()] == [(run_dir.name, "diverged")]


def test_filters_compare_numbers_numerically_and_text_as_text(tmp_path):
    for wd, size in [(0.0, "micro"), (0.1, "micro"), (1.0, "mini")]:
        _finished_run(tmp_path, weight_decay=wd, size=size)
    _finished_run(tmp_path, status="diverged", weight_decay=10.0)
    index = RunIndex(tmp_path)

    def wds(*where):
        return sorted(r["optim.weight_decay"] for r in index.rows(list(where)))

    assert wds("model.size=micro") == [0.0, 0.1, 10.0]
    assert wds("model.size!=micro") == [1.0]
    assert wds("optim.weight_decay>=0.1") == [0.1, 1.0, 10.0]  # as text, "10.0" < "0.1" would fail
    assert wds("optim.weight_decay<1") == [0.0, 0.1]
    assert wds("optim.weight_decay=0.10") == [0.1]
    assert wds("status!=diverged", "optim.weight_decay>0") == [0.1, 1.0]
    assert wds("created_at>=2026-01-01") == [0.0, 0.1, 1.0, 10.0]  # ISO text orders by time


def test_unknown_filter_key_and_malformed_filter_are_explained(tmp_path):
    _finished_run(tmp_path)
    index = RunIndex(tmp_path)
    with pytest.raises(ScarceError, match=r"unknown filter key 'optim\.wd'.*optim\.weight_decay"):
        index.rows(["optim.wd=0.1"])
    with pytest.raises(ScarceError, match="malformed filter 'weight_decay'"):
        index.rows(["weight_decay"])
    with pytest.raises(ScarceError, match="malformed filter '=3'"):
        index.rows(["=3"])


def test_export_csv_parses_back(tmp_path):
    _finished_run(tmp_path, weight_decay=0.1)
    _finished_run(tmp_path, weight_decay=0.2, size="mini")
    rows = load_runs_table(tmp_path)
    out = tmp_path / "runs.csv"

    export_csv(rows, out)
    with open(out, newline="") as f:
        parsed = list(csv.DictReader(f))
    header = list(parsed[0])
    assert header[:3] == ["run_id", "name", "status"]  # summary keys first
    config_columns = header[header.index("wall_seconds") + 1 : -1]
    assert config_columns == sorted(config_columns) and "optim.weight_decay" in config_columns
    assert header[-1] == "path"
    assert sorted(float(r["optim.weight_decay"]) for r in parsed) == [0.1, 0.2]
    assert {int(r["params"]) for r in parsed} == {1_000_000}

    export_csv(rows, out, columns=["params", "final_val_loss"])
    assert out.read_text().splitlines()[0] == "params,final_val_loss"
    with pytest.raises(ScarceError, match="unknown column key 'nope'"):
        export_csv(rows, out, columns=["nope"])


def test_reindex_recovers_every_row_after_the_index_is_deleted(tmp_path):
    recorded = {_finished_run(tmp_path, weight_decay=wd).name for wd in (0.0, 0.1, 0.2)}
    create_run_dir(tmp_path, "not-started", {})  # no summary yet: not a run to index
    (tmp_path / "index.sqlite").unlink()
    for leftover in tmp_path.glob("index.sqlite-*"):
        leftover.unlink()

    assert {r["run_id"] for r in load_runs_table(tmp_path)} == recorded  # rebuilds on its own

    # the index is a cache: a damaged one is rebuilt from the run directories, by a read or a write
    (tmp_path / "index.sqlite").write_bytes(b"not a database" * 100)
    with pytest.warns(UserWarning, match="was damaged.*rebuilt it from the run directories"):
        assert {r["run_id"] for r in RunIndex(tmp_path).rows()} == recorded
    (tmp_path / "index.sqlite").write_bytes(b"not a database" * 100)
    late = create_run_dir(tmp_path, "wd", _config())
    write_summary(late, _summary(late))
    with pytest.warns(UserWarning, match="was damaged"):
        RunIndex(tmp_path).record(late)
    assert {r["run_id"] for r in RunIndex(tmp_path).rows()} == recorded | {late.name}
    assert RunIndex(tmp_path).reindex() == 4


def test_load_runs_table_and_reindex_name_a_missing_runs_dir_and_create_nothing(tmp_path):
    with pytest.raises(ScarceError, match="nowhere"):
        load_runs_table(tmp_path / "nowhere")
    with pytest.raises(ScarceError, match="nowhere.*does not exist"):
        RunIndex(tmp_path / "nowhere").reindex()
    assert not (tmp_path / "nowhere").exists()
    assert load_runs_table(tmp_path) == []


def test_runs_table_shows_the_compact_columns_with_readable_numbers(tmp_path):
    run_dir = _finished_run(tmp_path)
    table = runs_table(load_runs_table(tmp_path))
    # Headers may break across lines, but they spell the exact keys a user filters on.
    assert [str(c.header).replace("\n", "") for c in table.columns] == [c for c in DEFAULT_TABLE_COLUMNS if c != "study"]
    console = Console(width=250, record=True)
    console.print(table)
    text = console.export_text()
    for expected in (run_dir.name, "completed", "micro", "1M", "200k", "3.5000", "61.5"):
        assert expected in text


def _sweep(runs_dir, study="wd-sweep"):
    """Five runs with a long name, as a sweep makes them, one still running (no losses yet)."""
    for i, wd in enumerate((0.0, 0.1, 0.4, 1.6, 6.4)):
        config = {**_config(weight_decay=wd), "name": "quickstart-tiny", "study": study}
        run_dir = create_run_dir(runs_dir, "quickstart-tiny", config)
        summary = {**_summary(run_dir, loss=4.123456 + i, params=12_345_678), "wall_seconds": 12345.6}
        if i == 4:
            summary.update(status="running", final_val_loss=None, best_val_loss=None)
        write_summary(run_dir, summary)
        RunIndex(runs_dir).record(run_dir)
    return load_runs_table(runs_dir)


def _rendered(table, width):
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().rstrip("\n").split("\n")


def _check_one_line_per_run(lines, rows, width):
    """No line wider than the terminal; each run on one line holding its whole id and its numbers."""
    assert max(len(line) for line in lines) <= width
    for row in rows:
        (line,) = [line for line in lines if row["run_id"] in line]
        cells = line.split()
        assert "12.3M" in cells and row["study"] in cells
        if row["final_val_loss"] is not None:
            assert f"{row['final_val_loss']:.4f}" in cells


def test_runs_table_fits_80_columns_one_line_per_run_and_names_what_it_hid(tmp_path):
    rows = _sweep(tmp_path)
    table = runs_table(rows, width=80)
    lines = _rendered(table, 80)
    _check_one_line_per_run(lines, rows, 80)
    shown = [str(c.header).replace("\n", "") for c in table.columns]
    assert shown[:2] == ["run_id", "study"] and "final_val_loss" in shown  # a sweep's runs show their study
    hidden = [c for c in DEFAULT_TABLE_COLUMNS if c not in shown]
    assert hidden and all(c in HIDE_FIRST[: len(hidden)] for c in hidden)  # the least needed went first
    caption = " ".join(lines[-3:])
    assert "to fit 80 columns" in caption and all(c in caption for c in hidden) and "--columns" in caption
    # Wide enough, nothing is hidden and there is no caption.
    wide = runs_table(rows, width=250)
    assert [str(c.header).replace("\n", "") for c in wide.columns] == list(DEFAULT_TABLE_COLUMNS)
    assert wide.caption is None
    # Chosen columns are kept in the order given, hidden from the right when they do not fit.
    chosen = ["run_id", "final_val_loss", "wall_seconds", "data.corpus", "optim.lr", "train.seed", "flops",
              "tokens_seen", "code_version", "device", "finished_at"]
    picked = runs_table(rows, chosen, width=80)
    kept = [str(c.header).replace("\n", "") for c in picked.columns]
    assert kept == chosen[: len(kept)] and len(kept) < len(chosen) and "finished_at" in picked.caption
    assert max(len(line) for line in _rendered(picked, 80)) <= 80


def test_study_column_only_when_a_run_has_one(tmp_path):
    rows = _sweep(tmp_path, study=None)
    assert all("study" in row for row in rows)  # the key is there, with no value
    assert "study" not in [str(c.header) for c in runs_table(rows, width=250).columns]


def test_runs_command_in_a_pipe_prints_one_line_per_run(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scarce import cli
    from scarce.commands import runs as runs_command

    rows = _sweep(tmp_path)
    monkeypatch.delenv("COLUMNS", raising=False)

    def no_terminal(*args):
        raise OSError("not a terminal")

    monkeypatch.setattr("os.get_terminal_size", no_terminal)  # stdin, stdout and stderr all piped
    monkeypatch.setattr(runs_command, "console", Console())
    result = CliRunner().invoke(cli.app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    _check_one_line_per_run(result.output.rstrip("\n").split("\n"), rows, 80)
    assert "not shown, to fit 80 columns" in result.output


def test_runs_command_reindex_of_a_missing_dir_is_an_error(tmp_path):
    from scarce.cli import main

    missing = tmp_path / "missing"
    for args in (["runs", str(missing)], ["runs", str(missing), "--reindex"]):
        with pytest.raises(SystemExit) as exit_info, pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", ["scarce", *args])
            main()
        assert exit_info.value.code == 2
    assert not missing.exists()


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from scarce.runs import RunIndex, create_run_dir, write_summary

    runs_dir, go, worker = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    while not go.exists():  # start together, so the writes really overlap
        time.sleep(0.005)
    for i in range(20):
        run_dir = create_run_dir(runs_dir, f"w{worker}", {"worker": worker, "i": i})
        write_summary(run_dir, {"run_id": run_dir.name, "status": "completed", "steps": i})
        RunIndex(runs_dir).record(run_dir)
    """
)


def test_processes_finishing_runs_at_once_lose_no_rows(tmp_path):
    runs_dir, go = tmp_path / "runs", tmp_path / "go"
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(runs_dir), str(go), str(w)], stderr=subprocess.PIPE)
        for w in range(6)
    ]
    time.sleep(0.5)  # let every interpreter start before any writes
    go.touch()
    for worker in workers:
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr.decode()

    rows = RunIndex(runs_dir).rows()
    assert len(rows) == 120
    assert len({r["run_id"] for r in rows}) == 120
    assert {(r["worker"], r["i"]) for r in rows} == {(w, i) for w in range(6) for i in range(20)}
    # WAL mode (a property of the file), so readers never block the writers.
    with closing(sqlite3.connect(runs_dir / "index.sqlite")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
