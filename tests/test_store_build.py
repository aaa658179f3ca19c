"""The streaming store build: input formats, shards, a process pool, resuming, the BPE's bounded sample."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import scarce.data.corpora as corpora_module
import scarce.data.store as store_module
from scarce.data.corpora import corpus_pieces, load_documents
from scarce.data.store import prepare_store
from scarce.data.tokenizer import train_bpe
from scarce.errors import ScarceError

TEXTS = [f"doc {i}: " + "the cat sat on the mat. " * (1 + i % 5) + "ünïcode " * (i % 3) for i in range(60)]


def store_files(store) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.path.iterdir())}


def prepare(source, root, **kwargs):
    return prepare_store(str(source), vocab_size=300, val_fraction=0.1, root=root, **kwargs)


@pytest.fixture
def jsonl(tmp_path):
    file = tmp_path / "corpus.jsonl"
    file.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS), encoding="utf-8")
    return file


def test_every_format_gives_the_same_documents(tmp_path, jsonl):
    raw = jsonl.read_bytes()
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "corpus.jsonl.gz").write_bytes(gzip.compress(raw))
    zst = tmp_path / "corpus.jsonl.zst"
    with pa.output_stream(str(zst), compression="zstd") as out:
        out.write(raw)
    parquet = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": list(range(60)), "text": TEXTS}), parquet, row_group_size=7)
    for source in (jsonl, tmp_path / "gz", zst, parquet):
        assert load_documents(str(source)) == TEXTS, source


def test_large_files_are_read_in_pieces_with_the_same_documents(tmp_path, jsonl, monkeypatch):
    parquet = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": TEXTS}), parquet, row_group_size=7)
    monkeypatch.setattr(corpora_module, "PIECE_BYTES", 300)
    for source in (jsonl, parquet):
        pieces = corpus_pieces(str(source))
        assert len(pieces) > 3
        assert load_documents(str(source)) == TEXTS


def test_text_field_picks_the_column_and_names_what_is_missing(tmp_path):
    file = tmp_path / "c.jsonl"
    file.write_text("".join(json.dumps({"content": t, "text": 1}) + "\n" for t in TEXTS[:5]))
    assert load_documents(str(file), text_field="content") == TEXTS[:5]
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"content": TEXTS[:5]}), parquet)
    assert load_documents(str(parquet), text_field="content") == TEXTS[:5]
    with pytest.raises(ScarceError, match=r"c\.parquet: no column `text` \(columns: content\).*--text-field"):
        load_documents(str(parquet))
    store = prepare(tmp_path, tmp_path / "data", text_field="content", tokenizer="gpt2")  # a directory of both
    assert store.meta["text_field"] == "content" and store.meta["train_documents"] + store.meta["val_documents"] == 10


def test_bad_rows_name_the_file_and_row(tmp_path, monkeypatch):
    parquet = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", "b", None, "d"]}), parquet, row_group_size=2)
    with pytest.raises(ScarceError, match=r"nulls\.parquet, row 2: `text` is null"):
        load_documents(str(parquet))
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(ScarceError, match=r"ints\.parquet: column `text` holds int64, not strings"):
        load_documents(str(tmp_path / "ints.parquet"))
    # A bad line in a later piece of a large JSONL file is still named by its line number in the file.
    lines = [json.dumps({"text": t}) for t in TEXTS]
    lines[41] = '{"text": oops}'
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(corpora_module, "PIECE_BYTES", 300)
    with pytest.raises(ScarceError, match=r"big\.jsonl, line 42: not valid JSON"):
        load_documents(str(tmp_path / "big.jsonl"))
    gz = tmp_path / "bad.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"text": "ok"}\n{"text": "caf\xe9"}\n'))
    with pytest.raises(ScarceError, match=r"bad\.jsonl\.gz, line 2: not UTF-8"):
        load_documents(str(gz))


def test_a_datasets_save_to_disk_directory_is_a_corpus(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"body": TEXTS, "n": list(range(60))}).save_to_disk(str(tmp_path / "ds"))
    assert load_documents(str(tmp_path / "ds"), text_field="body") == TEXTS
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS})}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ScarceError, match=r"DatasetDict: give one of its splits, e\.g\. .*dd/train"):
        load_documents(str(tmp_path / "dd"))
    assert load_documents(str(tmp_path / "dd" / "train")) == TEXTS


def test_shards_and_processes_change_no_byte_of_the_store(tmp_path, jsonl, monkeypatch):
    one = prepare(jsonl, tmp_path / "one", workers=1)
    monkeypatch.setattr(corpora_module, "PIECE_BYTES", 500)
    many = prepare(jsonl, tmp_path / "many", workers=2, shard_bytes=700)  # a spawned pool over several shards
    assert len(store_module.make_shards(corpus_pieces(str(jsonl)), 700)) >= 4
    assert store_files(one) == store_files(many)
    # The same documents as an in-memory split would give: train in the permutation's order, val in corpus order.
    train_ids, val_ids = store_module.split_documents(60, 0.1, 0)
    assert many.document_array("train_document_ids").tolist() == train_ids.tolist()
    assert many.document_array("val_document_ids").tolist() == val_ids.tolist()
    text = many.tokenizer.decode(many.val_tokens.tolist()).split("<|endoftext|>")[:-1]
    assert text == [TEXTS[i] for i in val_ids]
    offsets = many.document_array("train_document_offsets")
    first = many.tokenizer.decode(many.train_tokens[offsets[0] : offsets[1] - 1].tolist())
    assert first == TEXTS[train_ids[0]]


def test_a_killed_prepare_resumes_with_the_shards_it_had_not_finished(tmp_path, jsonl, monkeypatch):
    monkeypatch.setattr(corpora_module, "PIECE_BYTES", 500)
    reference = prepare(jsonl, tmp_path / "ref", workers=1)
    real, calls = store_module._tokenize_shard, []

    def killed_after_three(shard, *args):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill would
        calls.append(shard.name)
        real(shard, *args)

    monkeypatch.setattr(store_module, "_tokenize_shard", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare(jsonl, tmp_path / "data", workers=1, shard_bytes=700)
    done = list(calls)

    def resumed(shard, *args):
        assert shard.name not in done, "a finished shard was tokenized again"
        calls.append(shard.name)
        real(shard, *args)

    monkeypatch.setattr(store_module, "_tokenize_shard", resumed)
    store = prepare(jsonl, tmp_path / "data", workers=1, shard_bytes=700)
    assert len(calls) > len(done) == 3
    assert store_files(store) == store_files(reference)


def test_the_bpe_trains_on_a_bounded_seeded_sample_of_training_documents(tmp_path, jsonl):
    store = prepare(jsonl, tmp_path, bpe_sample_bytes=1000)
    train_ids = store.document_array("train_document_ids").tolist()
    sampled = store.meta["bpe_sample_documents"]
    assert 1 < sampled < len(train_ids) and store.meta["bpe_sample_bytes"] == 1000
    sample = [TEXTS[i] for i in train_ids[:sampled]]  # the first training documents, in training order
    assert sum(len(t.encode()) for t in sample) >= 1000 > sum(len(t.encode()) for t in sample[:-1])
    assert store.meta["bpe_sample_text_bytes"] == sum(len(t.encode()) for t in sample)
    assert store.tokenizer.fingerprint == train_bpe(sample, vocab_size=300).fingerprint
    # The sample size keys the store; the split does not depend on it.
    whole = prepare(jsonl, tmp_path)
    assert whole.path != store.path and whole.meta["bpe_sample_documents"] == len(train_ids)
    assert whole.document_array("val_document_ids").tolist() == store.document_array("val_document_ids").tolist()


def test_corrupt_part_files_are_not_trusted(tmp_path, jsonl, monkeypatch):
    """A shard whose tokenized count disagrees with its scan (the corpus changed mid-prepare) is an error."""
    def stale_scan(shard, work):
        store_module._save_npy(work / f"{shard.name}.bytes.npy", np.ones(3, dtype=np.int64))

    monkeypatch.setattr(store_module, "_scan_shard", stale_scan)
    with pytest.raises(ScarceError, match="60 documents tokenized but 3 scanned"):
        prepare(jsonl, tmp_path, workers=1)



def test_shards_can_run_as_submitit_jobs(tmp_path, jsonl, monkeypatch):
    pytest.importorskip("submitit")
    from scarce.executors import shard_mapper

    reference = prepare(jsonl, tmp_path / "ref", workers=1)
    monkeypatch.setattr(corpora_module, "PIECE_BYTES", 1500)
    mapper = shard_mapper("submitit", tmp_path / "jobs", cluster="local")
    store = prepare(jsonl, tmp_path / "data", shard_bytes=1500, mapper=mapper)
    assert store_files(store) == store_files(reference)
    assert len(list((tmp_path / "jobs").glob("*/*_result.pkl"))) >= 3 * 2  # read, sample, tokenize; 2+ shards each


def test_shards_can_run_as_ray_tasks(tmp_path, jsonl, monkeypatch):
    ray = pytest.importorskip("ray")
    from scarce.executors import shard_mapper

    reference = prepare(jsonl, tmp_path / "ref", workers=1)
    monkeypatch.setattr(corpora_module, "PIECE_BYTES", 1500)
    calls = []
    mapper = shard_mapper("ray", tmp_path / "unused")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        store = prepare(jsonl, tmp_path / "data", shard_bytes=1500,
                        mapper=lambda function, jobs: calls.append(len(jobs)) or mapper(function, jobs))
        assert ray.is_initialized()  # the mapper leaves a Ray instance it did not start alone
    finally:
        ray.shutdown()
    assert store_files(store) == store_files(reference)
    assert len(calls) == 3 and min(calls) >= 2  # read, sample, tokenize; 2+ shards each


def test_a_dead_worker_is_an_error_that_says_what_to_do(tmp_path, jsonl):
    """A pool worker that dies (here: a top-level script without the main guard, which spawned workers
    re-run) is an error that names the shard and says how to go on."""
    script = tmp_path / "unguarded.py"
    script.write_text("import scarce.data.corpora\nfrom scarce.data.store import prepare_store\n"
                      "scarce.data.corpora.PIECE_BYTES = 500\n"
                      f"prepare_store({str(jsonl)!r}, vocab_size=300, root={str(tmp_path / 'data')!r}, workers=2, "
                      "shard_bytes=700)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode != 0
    assert "ScarceError: a worker process died on a shard starting at" in result.stderr
    assert "run it again to resume" in result.stderr
