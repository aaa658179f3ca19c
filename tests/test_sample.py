"""KV-cached sampling: the cached step's logits equal the full forward's, cached sampling equals sampling
by full recomputation for the same seed (one model and an ensemble), documents are whole, bad input fails."""

import json

import pytest
import torch
from typer.testing import CliRunner

from scarce.cli import app
from scarce.config import resolve_config
from scarce.errors import ScarceError
from scarce.model import Transformer, model_shape
from scarce.train.sample import KVCache, cached_step, pick_tokens, sample_documents
from scarce.train.trainer import train

EOT = 0


def micro(seed: int, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(model_shape("micro", vocab_size=48, seq_len=12, **overrides)).eval()


@pytest.mark.parametrize("options", [{"qk_norm": True}, {"qk_norm": False}, {"positions": "learned"},
                                     {"block": "gpt2", "positions": "learned", "qk_norm": False}])
def test_cached_logits_equal_the_full_forward_with_rows_at_different_positions(options):
    model = micro(0, **options)
    tokens = torch.randint(0, 48, (2, 12))
    lag = 5  # row 1 starts 5 steps after row 0, so the rows sit at different positions every step
    full = model(tokens)
    cache = KVCache(model, 2, torch.device("cpu"))
    for step in range(12 + lag):
        positions = torch.tensor([min(step, 11), max(0, min(step - lag, 11))])
        logits = cached_step(model, cache, tokens[[0, 1], positions], positions, int(positions.max()) + 1)
        for row in (0, 1):
            if (row == 0 and step < 12) or (row == 1 and step >= lag):
                torch.testing.assert_close(logits[row], full[row, positions[row]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"temperature": 0.7, "top_k": 5}, {"temperature": 0.0}])
@pytest.mark.parametrize("chunk", [KVCache.CHUNK, 4])
def test_cached_sampling_equals_recomputed_sampling(options, chunk, monkeypatch):
    monkeypatch.setattr(KVCache, "CHUNK", chunk)  # 4: the cache grows and shrinks as documents start and end
    models = [micro(1)]
    cached = list(sample_documents(models, 60, EOT, batch_size=4, seed=3, **options))
    recomputed = list(sample_documents(models, 60, EOT, batch_size=4, seed=3, cache=False, **options))
    assert cached == recomputed
    assert sum(len(d.tokens) + (d.end == "eot") for d in cached) >= 60
    for doc in cached:  # whole documents: no end-of-text inside, at most the context
        assert EOT not in doc.tokens and len(doc.tokens) <= 12
        assert doc.end == "eot" or len(doc.tokens) == 12


def test_the_cache_grows_by_chunks_and_shrinks_once_two_are_unused(monkeypatch):
    monkeypatch.setattr(KVCache, "CHUNK", 4)
    cache = KVCache(micro(0), 2, torch.device("cpu"))
    capacities = []
    for span in (1, 4, 5, 12, 7, 5, 4, 9):
        cache.fit(span)
        capacities.append(cache.capacity)
    assert capacities == [4, 4, 8, 12, 12, 12, 4, 12]  # never past the context (12)


def test_draws_follow_the_distribution_and_never_pick_what_top_k_removed():
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(20000, 4)
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(pick_tokens(log_probs, 1.0, None, generator), minlength=4) / 20000
    torch.testing.assert_close(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015, rtol=0)
    top2 = torch.bincount(pick_tokens(log_probs, 1.0, 2, generator), minlength=4) / 20000
    assert top2[2:].sum() == 0 and abs(top2[0] - 0.625) < 0.015  # renormalized over the two kept
    cold = torch.bincount(pick_tokens(log_probs, 0.5, None, generator), minlength=4) / 20000
    assert abs(cold[0] - 0.25 / (0.25 + 0.09 + 0.0225 + 0.0025)) < 0.015  # p^(1/T), renormalized


def test_ensemble_sampling_averages_logits_and_matches_recomputation():
    models = [micro(1), micro(2)]
    cached = list(sample_documents(models, 60, EOT, batch_size=3, seed=5, top_k=8))
    assert cached == list(sample_documents(models, 60, EOT, batch_size=3, seed=5, top_k=8, cache=False))
    assert cached != list(sample_documents(models[:1], 60, EOT, batch_size=3, seed=5, top_k=8))


@pytest.mark.parametrize("options", [{"temperature": -1.0}, {"top_k": 0}, {"batch_size": 0}])
def test_bad_sampling_options_are_errors(options):
    with pytest.raises(ScarceError):
        list(sample_documents([micro(0)], 10, EOT, **options))
    with pytest.raises(ScarceError, match="--tokens"):
        list(sample_documents([micro(0)], 0, EOT))


def test_sample_command_writes_documents(tmp_path):
    config = resolve_config({"name": "s", "runs_dir": str(tmp_path / "runs")}, [
        "model.size=micro", "model.seq_len=16", "data.vocab_size=512", "data.unique_tokens=1024",
        "data.eval_tokens=64", "train.batch_size=8",
    ])
    run_dir = train(config, progress=False)
    out = tmp_path / "samples.jsonl"
    result = CliRunner().invoke(app, ["sample", str(run_dir), "--tokens", "40", "--batch-size", "4", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(len(d["tokens"]) + (d["end"] == "eot") for d in docs) >= 40
    assert all(d["end"] in ("eot", "length") and isinstance(d["text"], str) for d in docs)


def test_tokens_counts_the_documents_tokens_not_their_end_of_text(monkeypatch):
    from scarce.train import sample

    def eot_biased(bias):
        combine = sample.combine_log_probs
        return lambda logits, how: combine(logits, how).index_add(-1, torch.tensor([EOT]), torch.full((4, 1), bias))

    monkeypatch.setattr(sample, "combine_log_probs", eot_biased(2.5))  # short documents: many end-of-text draws
    stats = {}
    docs = list(sample_documents([micro(0)], 200, EOT, batch_size=4, stats=stats))
    assert sum(len(d.tokens) for d in docs) == stats["tokens"] >= 200
    assert stats["draws"] >= stats["tokens"] + sum(d.end == "eot" for d in docs)
    monkeypatch.setattr(sample, "combine_log_probs", eot_biased(100.0))  # only end-of-text: an error, not a hang
    with pytest.raises(ScarceError, match="end-of-text"):
        list(sample_documents([micro(0)], 20, EOT, batch_size=4))
