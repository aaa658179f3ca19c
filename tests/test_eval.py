"""Held-out evaluation: a seeded sample of whole validation documents, exact bits per byte, every token of
the sample scored once, data-parallel ranks that add up to one process."""

import json
import math

import numpy as np
import pytest
import torch

from scarce.data.corpora import load_documents
from scarce.data.store import prepare_store
from scarce.evals.perplexity import evaluate
from scarce.model import Transformer, model_shape

SEQ_LEN = 32
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """60 documents whose bytes per token differ a lot: repetitive ASCII (long merged tokens) and Greek
    text (two bytes a letter, few merges), so a split-wide bytes/token ratio misjudges any subset."""
    root = tmp_path_factory.mktemp("eval")
    lines = []
    for i in range(60):
        if i % 3 == 0:
            text = f"{i} " + "λόγος καὶ ἀρχή ψυχῆς " * (2 + i % 4)
        else:
            text = f"{i} " + "the cat sat on the mat. " * (3 + i % 7)
        lines.append(json.dumps({"text": text}, ensure_ascii=False))
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return prepare_store(str(root / "corpus.jsonl"), vocab_size=300, val_fraction=0.5, root=root / "data")


@pytest.fixture(scope="module")
def model(store):
    torch.manual_seed(0)
    return Transformer(model_shape("micro", vocab_size=store.vocab_size, seq_len=SEQ_LEN))


def document_tokens(store, i):
    """Validation document i's tokens, its closing eot included."""
    starts = store.document_array("val_document_offsets").tolist() + [store.val_token_count]
    return store.val_tokens[starts[i] : starts[i + 1]]


def test_sample_is_seeded_whole_documents_spread_over_the_split(store):
    budget = store.val_token_count // 4
    sample = store.eval_sample(budget)
    ids = sample.document_ids.tolist()
    assert ids == sorted(ids) and ids != list(range(len(ids)))  # not simply the first documents
    lengths = [len(document_tokens(store, i)) for i in ids]
    assert sample.scored_tokens == sum(lengths) >= budget > sum(lengths) - max(lengths)
    # The stream is eot, then each chosen document whole with its eot.
    expected = np.concatenate([[store.eot_id], *(document_tokens(store, i) for i in ids)])
    assert np.array_equal(sample.tokens, expected)
    # The same documents at every call; a larger budget scores a superset.
    assert np.array_equal(store.eval_sample(budget).tokens, sample.tokens)
    assert set(ids) <= set(store.eval_sample(2 * budget).document_ids.tolist())


def test_sample_bytes_are_the_text_of_exactly_the_sampled_documents(store):
    documents = load_documents(store.meta["source"])
    sample = store.eval_sample(store.val_token_count // 4)
    val_ids = store.document_array("val_document_ids").tolist()
    assert sample.bytes == sum(len(documents[val_ids[i]].encode("utf-8")) for i in sample.document_ids)
    whole = store.eval_sample(None)
    assert whole.bytes == store.val_bytes and np.array_equal(whole.tokens[1:], store.val_tokens)
    assert np.array_equal(store.eval_sample(10**9).tokens, whole.tokens)


def test_bits_per_byte_divides_by_the_bytes_scored(store, model):
    sample = store.eval_sample(store.val_token_count // 3)
    result = evaluate(model, sample, SEQ_LEN, 4, CPU)
    assert result["val_tokens"] == sample.scored_tokens
    nats = result["val_loss"] * result["val_tokens"]
    assert result["val_bpb"] == pytest.approx(nats / (sample.bytes * math.log(2)), rel=1e-9)
    # The estimate from the whole split's tokens per byte would be far off on this corpus.
    split_estimate = result["val_loss"] / math.log(2) * store.val_token_count / store.val_bytes
    assert abs(split_estimate - result["val_bpb"]) > 0.02 * result["val_bpb"]


def test_whole_split_scores_every_validation_token(store, model):
    result = evaluate(model, store.eval_sample(None), SEQ_LEN, 4, CPU)
    assert result["val_tokens"] == store.val_token_count


def test_loss_does_not_depend_on_the_batch_size(store, model):
    sample = store.eval_sample(500)
    one, many = (evaluate(model, sample, SEQ_LEN, b, CPU) for b in (1, 7))
    assert one["val_tokens"] == many["val_tokens"]
    assert one["val_loss"] == pytest.approx(many["val_loss"], rel=1e-6)


def test_data_parallel_ranks_split_the_windows_and_add_up(store, model, tmp_path):
    """Each rank of 2 scores its share; with a one-process group the all-reduce passes them through, so
    the two shares must add up to the single-process result."""
    sample = store.eval_sample(700)
    whole = evaluate(model, sample, SEQ_LEN, 2, CPU)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        shares = [evaluate(model, sample, SEQ_LEN, 2, CPU, rank=r, world_size=2) for r in (0, 1)]
    finally:
        torch.distributed.destroy_process_group()
    assert all(0 < s["val_tokens"] < whole["val_tokens"] for s in shares)
    assert sum(s["val_tokens"] for s in shares) == whole["val_tokens"]
    nats = sum(s["val_loss"] * s["val_tokens"] for s in shares)
    assert nats == pytest.approx(whole["val_loss"] * whole["val_tokens"], rel=1e-6)


def test_bad_budget_is_named(store):
    from scarce.errors import ScarceError

    with pytest.raises(ScarceError, match="eval tokens"):
        store.eval_sample(0)
