import pytest

from scarce.data.tokenizer import EOT, MASK, Tokenizer, gpt2_tokenizer, train_bpe
from scarce.errors import ScarceError

DOCUMENTS = [
    f"Document {i}: the quick brown fox jumps over the lazy dog. Pack my box with {i * 7} jugs.\n"
    "  Indented line, tabs\tand unicode: café, 日本語, emoji 🙂."
    for i in range(60)
]


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(DOCUMENTS, vocab_size=320)


def test_bpe_roundtrips_any_text(bpe):
    for text in [DOCUMENTS[3], "unseen words: zebra quixotic ☃\r\n\n  end", "", " leading space", "\x00\x7f"]:
        assert bpe.decode(bpe.encode(text)) == text


def test_bpe_special_tokens_are_reserved_single_tokens(bpe):
    assert (bpe.eot_id, bpe.mask_id) == (0, 1)
    assert bpe.kind == "bpe"
    assert bpe.vocab_size == 320  # the asked-for size includes the specials
    assert bpe.decode([bpe.eot_id]) == EOT and bpe.decode([bpe.mask_id]) == MASK
    # Special strings inside text stay text: a document cannot forge a document boundary.
    ids = bpe.encode(f"a{EOT}b{MASK}")
    assert bpe.eot_id not in ids and bpe.mask_id not in ids
    assert bpe.decode(ids) == f"a{EOT}b{MASK}"


def test_encode_batch_matches_encode(bpe):
    assert bpe.encode_batch(DOCUMENTS[:5]) == [bpe.encode(doc) for doc in DOCUMENTS[:5]]


def test_save_load_keeps_everything(bpe, tmp_path):
    bpe.save(tmp_path / "tok.json")
    loaded = Tokenizer.load(tmp_path / "tok.json")
    assert (loaded.fingerprint, loaded.vocab_size, loaded.kind) == (bpe.fingerprint, bpe.vocab_size, bpe.kind)
    assert loaded.encode(DOCUMENTS[0]) == bpe.encode(DOCUMENTS[0])


def test_cache_hit_reuses_the_file_without_retraining(tmp_path):
    first = train_bpe(DOCUMENTS, vocab_size=300, cache_dir=tmp_path)
    (cached,) = tmp_path.iterdir()
    mtime = cached.stat().st_mtime_ns
    second = train_bpe(DOCUMENTS, vocab_size=300, cache_dir=tmp_path)
    assert second.fingerprint == first.fingerprint
    assert cached.stat().st_mtime_ns == mtime and len(list(tmp_path.iterdir())) == 1
    other = train_bpe(DOCUMENTS[:30], vocab_size=300, cache_dir=tmp_path)  # other documents: another entry
    assert len(list(tmp_path.iterdir())) == 2 and other.vocab_size <= 300


def test_vocab_size_is_validated():
    with pytest.raises(ScarceError, match="vocab_size.*258"):
        train_bpe(DOCUMENTS, vocab_size=100)


def test_load_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ScarceError, match="nothing.json"):
        Tokenizer.load(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ScarceError, match="bad.json"):
        Tokenizer.load(tmp_path / "bad.json")


def test_gpt2_matches_known_ids():
    gpt2 = gpt2_tokenizer()
    assert gpt2.kind == "gpt2"
    assert (gpt2.vocab_size, gpt2.eot_id, gpt2.mask_id) == (50258, 50256, 50257)
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(" Hello world!") == [18435, 995, 0]
    assert gpt2.decode([15496, 995, 50256]) == "Hello world<|endoftext|>"
