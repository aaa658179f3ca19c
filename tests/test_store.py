import json

import numpy as np
import pytest

import scarce.data.store as store_module
from scarce.data.corpora import load_documents
from scarce.data.store import open_store, prepare_store, split_documents, token_dtype
from scarce.data.tokenizer import train_bpe
from scarce.errors import ScarceError


@pytest.fixture
def corpus(tmp_path):
    """40 distinct documents, each identifiable by its number."""
    file = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": f"doc {i}: " + "the cat sat on the mat. " * (1 + i % 5)}) for i in range(40)]
    file.write_text("\n".join(lines) + "\n")
    return str(file)


def prepare(corpus, root, **kwargs):
    return prepare_store(corpus, vocab_size=300, val_fraction=0.1, root=root, **kwargs)


def test_store_layout_and_meta(corpus, tmp_path):
    store = prepare(corpus, tmp_path / "data")
    arrays = {f"{name}.npy" for name in store_module.DOCUMENT_ARRAYS}
    assert {p.name for p in store.path.iterdir()} == {"train.bin", "val.bin", "meta.json", "tokenizer.json", *arrays}
    assert not [key for key in store.meta if key.endswith(("_ids", "_offsets", "_document_bytes"))]  # no JSON lists
    assert store.path.name.startswith("corpus-")
    assert store.train_tokens.dtype == np.uint16 and store.meta["dtype"] == "uint16"
    assert (store.meta["train_documents"], store.meta["val_documents"]) == (36, 4)
    assert store.train_token_count == len(store.train_tokens) and store.val_token_count == len(store.val_tokens)
    assert not store.train_tokens.flags.writeable
    documents = load_documents(corpus)
    val_text = [documents[i] for i in store.document_array("val_document_ids").tolist()]
    assert store.val_bytes == sum(len(doc.encode()) for doc in val_text)
    # Every document is followed by eot, and the offsets point at document starts.
    assert int((store.train_tokens == store.eot_id).sum()) == 36 and store.train_tokens[-1] == store.eot_id
    offsets = store.document_array("train_document_offsets").tolist()
    first_id = store.document_array("train_document_ids").tolist()[0]
    assert store.tokenizer.decode(store.train_tokens[offsets[0] : offsets[1] - 1].tolist()) == documents[first_id]
    assert store.tokenizer.fingerprint == store.meta["tokenizer_fingerprint"]


def test_val_split_is_stable_and_disjoint(corpus, tmp_path):
    a = prepare(corpus, tmp_path / "a")
    b = prepare(corpus, tmp_path / "b")
    assert a.document_array("val_document_ids").tolist() == b.document_array("val_document_ids").tolist()
    assert np.array_equal(a.val_tokens, b.val_tokens)
    train_ids, val_ids = set(a.document_array("train_document_ids").tolist()), set(a.document_array("val_document_ids").tolist())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(40))
    reseeded = prepare(corpus, tmp_path / "c", split_seed=1)
    assert reseeded.document_array("val_document_ids").tolist() != a.document_array("val_document_ids").tolist()


def test_train_order_is_shuffled_not_corpus_order(corpus, tmp_path):
    ids = prepare(corpus, tmp_path).document_array("train_document_ids").tolist()
    assert ids != sorted(ids)


def test_tokenizer_never_sees_validation_documents(corpus, tmp_path):
    store = prepare(corpus, tmp_path)
    documents = load_documents(corpus)
    train_only = train_bpe([documents[i] for i in store.document_array("train_document_ids").tolist()], vocab_size=300)
    assert store.tokenizer.fingerprint == train_only.fingerprint
    assert train_bpe(documents, vocab_size=300).fingerprint != train_only.fingerprint


def test_budgets_are_nested_prefixes(corpus, tmp_path):
    store = prepare(corpus, tmp_path)
    small, large = store.budget(100), store.budget(200)
    assert len(small) == 100 and len(large) == 200
    assert np.array_equal(large[:100], small)
    assert np.array_equal(store.budget(store.train_token_count), store.train_tokens)


def test_budget_beyond_the_corpus_names_the_count(corpus, tmp_path):
    store = prepare(corpus, tmp_path)
    with pytest.raises(ScarceError, match=f"exceeds the {store.train_token_count} training tokens"):
        store.budget(store.train_token_count + 1)
    with pytest.raises(ScarceError, match="at least 2"):
        store.budget(1)


def test_second_prepare_opens_the_cache(corpus, tmp_path, monkeypatch):
    first = prepare(corpus, tmp_path)
    mtime = (first.path / "train.bin").stat().st_mtime_ns

    def no_retokenizing(*args, **kwargs):
        raise AssertionError("the cached store should have been opened, not rebuilt")

    monkeypatch.setattr(store_module, "corpus_pieces", no_retokenizing)
    second = prepare(corpus, tmp_path)
    assert second.path == first.path and (second.path / "train.bin").stat().st_mtime_ns == mtime


def test_default_root_is_under_scarce_home(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SCARCE_HOME", str(tmp_path / "home"))
    store = prepare_store(corpus, vocab_size=300)
    assert store.path.parent == tmp_path / "home" / "data"
    assert list((tmp_path / "home" / "data" / "tokenizers").iterdir())  # the tokenizer cache


def test_gpt2_store_keeps_gpt2_ids(corpus, tmp_path):
    store = prepare_store(corpus, tokenizer="gpt2", root=tmp_path)
    assert store.vocab_size == 50258 and store.eot_id == 50256 and store.mask_id == 50257
    assert store.train_tokens.dtype == np.uint16  # 50258 ids still fit in 16 bits
    assert store.tokenizer.kind == "gpt2"


def test_token_dtype_widens_past_16_bits():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_failed_prepare_leaves_no_partial_store(corpus, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_module, "write_json_atomic", crash)  # fails after the token files are written
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(corpus, tmp_path / "data")
    # no store and no temporary directory; only the tokenizer cache and the parts a retry resumes from
    left = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert left[0].startswith(".corpus-") and left[0].endswith(".parts") and left[1:] == ["tokenizers"]
    monkeypatch.undo()
    assert prepare(corpus, tmp_path / "data").train_token_count > 0  # and a retry builds it
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")] == []  # parts cleaned up


def test_open_store_rejects_missing_and_corrupt_meta(corpus, tmp_path):
    with pytest.raises(ScarceError, match="meta.json is missing"):
        open_store(tmp_path)
    store = prepare(corpus, tmp_path / "data")
    (store.path / "meta.json").write_text('{"dtype": "uint16", ')
    with pytest.raises(ScarceError, match=r"meta\.json is corrupt"):
        open_store(store.path)


def test_store_of_an_older_format_is_not_misread(corpus, tmp_path, monkeypatch):
    store = prepare(corpus, tmp_path / "data")
    meta = json.loads((store.path / "meta.json").read_text())
    assert meta["format_version"] == store_module.STORE_FORMAT_VERSION == 3
    documents = load_documents(corpus)
    val_ids = store.document_array("val_document_ids").tolist()
    assert store.document_array("val_document_bytes").tolist() == [len(documents[i].encode()) for i in val_ids]
    # The format is part of the cache key, so a prepare never finds a store built by another format...
    monkeypatch.setattr(store_module, "STORE_FORMAT_VERSION", 4)
    monkeypatch.setattr(store_module, "READABLE_FORMATS", (2, 3, 4))
    assert prepare(corpus, tmp_path / "data").path != store.path
    monkeypatch.undo()
    # ...and opening one by path refuses it by name instead of misreading it.
    (store.path / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(ScarceError, match="format 1, this scarce reads formats 2, 3"):
        open_store(store.path)


def test_a_format_2_store_still_opens_with_its_arrays_in_meta_json(corpus, tmp_path):
    """Format 2 kept the per-document arrays as JSON lists in meta.json; the tokens were laid out the same."""
    store = prepare(corpus, tmp_path / "data")
    expected = {name: store.document_array(name).tolist() for name in store_module.DOCUMENT_ARRAYS}
    sample = store.eval_sample(store.val_token_count // 2)
    meta = {**json.loads((store.path / "meta.json").read_text()), "format_version": 2, **expected}
    (store.path / "meta.json").write_text(json.dumps(meta))
    for name in store_module.DOCUMENT_ARRAYS:
        (store.path / f"{name}.npy").unlink()
    old = open_store(store.path)
    assert {name: old.document_array(name).tolist() for name in store_module.DOCUMENT_ARRAYS} == expected
    old_sample = old.eval_sample(store.val_token_count // 2)
    assert np.array_equal(old_sample.tokens, sample.tokens) and old_sample.bytes == sample.bytes
    del meta["val_document_bytes"]
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ScarceError, match="lacks val_document_bytes"):
        open_store(store.path)


def test_a_missing_document_array_is_detected(corpus, tmp_path):
    store = prepare(corpus, tmp_path)
    np.save(store.path / "val_document_offsets.npy", np.zeros(1, dtype=np.int64))
    with pytest.raises(ScarceError, match="val_document_offsets holds 1 documents, meta.json says 4"):
        open_store(store.path)
    (store.path / "val_document_offsets.npy").unlink()
    with pytest.raises(ScarceError, match="val_document_offsets holds unreadable"):
        open_store(store.path)


def test_truncated_token_file_is_detected(corpus, tmp_path):
    store = prepare(corpus, tmp_path)
    path = store.path
    del store
    with open(path / "train.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(ScarceError, match="train.bin"):
        open_store(path)


def test_bad_settings_are_rejected(corpus, tmp_path):
    with pytest.raises(ScarceError, match="tokenizer"):
        prepare_store(corpus, tokenizer="sentencepiece", root=tmp_path)
    with pytest.raises(ScarceError, match="val_fraction"):
        prepare_store(corpus, val_fraction=1.0, root=tmp_path)
    one_doc = tmp_path / "one.txt"
    one_doc.write_text("just one short document")
    with pytest.raises(ScarceError, match="at least 2"):
        prepare_store(str(one_doc), root=tmp_path)


def test_split_holds_out_at_least_one_document_and_never_all():
    for documents, val_fraction, expected_val in [(2, 0.05, 1), (10, 0.99, 9), (1189, 0.05, 59)]:
        train_ids, val_ids = split_documents(documents, val_fraction, split_seed=0)
        assert len(val_ids) == expected_val and len(train_ids) == documents - expected_val
        assert sorted([*train_ids, *val_ids]) == list(range(documents))


def test_kjv_store_end_to_end(tmp_path):
    store = prepare_store("kjv", tokenizer="gpt2", root=tmp_path)  # GPT-2: no tokenizer training in a test
    assert (store.meta["train_documents"], store.meta["val_documents"]) == (1130, 59)
    assert 900_000 < store.train_token_count < 1_100_000
    first_chapter = store.tokenizer.decode(store.budget(20).tolist())
    assert first_chapter.split("\n")[0].split()[-1].isdigit()  # starts with a "Book N" title line
