"""Domain corpora: one shared tokenizer, per-domain held-out documents, the deterministic mixture, and a
micro run that reports loss per domain."""

import json

import numpy as np
import pytest

from scarce import runs
from scarce.config import resolve_config
from scarce.data.domains import DomainMixture, domain_counts, prepare_data
from scarce.errors import ScarceError
from scarce.evals.run import evaluate_run
from scarce.train.trainer import train

DOMAINS = ("verse", "code", "prose")  # conftest.write_domains

@pytest.fixture(scope="module")
def domain_paths(tmp_path_factory, write_domains):
    return write_domains(tmp_path_factory.mktemp("domains"))


def data_overrides(paths, **weights):
    items = []
    for name, path in paths.items():
        items.append(f'data.domains.{name}.source="{path}"')
        if name in weights:
            items.append(f"data.domains.{name}.weight={weights[name]}")
    return items


MICRO = ["model.size=micro", "model.seq_len=16", "data.vocab_size=300", "data.eval_tokens=512", "data.val_fraction=0.1",
         "train.batch_size=8", "train.log_every=4"]


def cfg(tmp_path, paths, *overrides, **weights):
    return resolve_config({"name": "dom", "runs_dir": str(tmp_path / "runs")}, [*MICRO, *data_overrides(paths, **weights), *overrides])


def test_each_domains_evaluation_scores_only_its_own_held_out_documents(domain_paths, tmp_path):
    store = prepare_data(cfg(tmp_path, domain_paths).data)
    assert set(store.domains) == set(DOMAINS)
    fingerprints = {s.meta["tokenizer_fingerprint"] for s in store.domains.values()}
    assert len(fingerprints) == 1  # one tokenizer, trained on the mixture
    samples = store.eval_sample(None)
    for name, sample in samples.items():
        held_out = {json.loads(line)["text"] for i, line in enumerate(open(domain_paths[name]))
                    if i in set(store.domains[name].document_array("val_document_ids").tolist())}
        trained = {json.loads(line)["text"] for i, line in enumerate(open(domain_paths[name]))
                   if i in set(store.domains[name].document_array("train_document_ids").tolist())}
        text = store.tokenizer.decode(sample.tokens.tolist())
        scored = [doc for doc in text.split("<|endoftext|>") if doc]
        assert set(scored) == held_out and not set(scored) & trained
        assert all(doc.startswith(f"{name} ") for doc in scored)  # no other domain's documents
        assert sample.bytes == sum(len(doc.encode()) for doc in held_out)


def test_domain_counts_sum_never_decrease_and_stay_within_the_documented_bound_of_the_weights():
    """Domain i (1-based) of k stays within min(i, k − 1)/2 sequences of n·w_i (domain_counts' docstring):
    one sequence for up to 3 domains, more beyond, as a brute-force search finds."""
    rng = np.random.default_rng(0)
    worst = {}
    for weights in [[0.5, 0.0, 0.3, 0.2]] + [list(rng.dirichlet(np.ones(k))) for k in (2, 3, 4, 6) for _ in range(25)]:
        k, previous = len(weights), [0] * len(weights)
        for n in range(400):
            counts = domain_counts(n, weights)
            assert sum(counts) == n and all(c >= p for c, p in zip(counts, previous))
            for i, (c, w) in enumerate(zip(counts, weights), 1):
                assert abs(c - n * w) <= min(i, k - 1) / 2 + 1e-9, (weights, n, i)
                worst[k] = max(worst.get(k, 0.0), abs(c - n * w))
            previous = counts
    assert domain_counts(7, [0.5, 0.0, 0.3, 0.2])[1] == 0
    assert worst[3] <= 1 < worst[4] and worst[6] > worst[4]  # "within one sequence" holds up to 3 domains only


def mixture(weights, caps=(400, 400, 400), **kw):
    budgets = {name: np.arange(cap, dtype=np.int64) + 1000 * i for i, (name, cap) in enumerate(zip("abc", caps))}
    return DomainMixture(budgets, dict(zip("abc", weights)), seq_len=8, batch_size=10, seed=3, **kw)


def test_mixture_draws_each_domain_by_weight_from_its_own_budget_and_repeats_a_small_one():
    source = mixture([0.6, 0.0, 0.4], caps=(400, 400, 81), tokens=8 * 10 * 30)  # c: 10 sequences, asked for 120
    taken = {"a": 0, "b": 0, "c": 0}
    for batch in source:
        for row in batch.inputs:
            domain = "abc"[int(row[0]) // 1000]
            assert np.array_equal(row.numpy(), np.arange(int(row[0]), int(row[0]) + 8))  # contiguous, one domain per row
            taken[domain] += 1
    assert taken == {"a": 180, "b": 0, "c": 120}
    assert source.epochs_per_domain["c"] == 12.0 and source.steps == 30


def test_mixture_resumes_exactly_and_rejects_another_mixture():
    a, b = mixture([1, 1, 1]), mixture([1, 1, 1])
    for _ in zip(range(7), a):
        pass
    b.load_state_dict(a.state_dict())
    rest_a, rest_b = list(a), list(b)
    assert len(rest_a) == len(rest_b) == a.steps - 7
    assert all(np.array_equal(x.inputs, y.inputs) for x, y in zip(rest_a, rest_b))
    with pytest.raises(ScarceError, match="domains"):
        mixture([1, 2, 1]).load_state_dict(a.state_dict())


@pytest.mark.parametrize("overrides,named", [
    (["data.domains.verse.weight=1"], "data.domains.code.weight"),  # some weights but not all
    (["data.domains.verse.weight=0", "data.domains.code.weight=0", "data.domains.prose.weight=0"], "positive"),
    (["data.unique_tokens=1000"], "data.domains.NAME.unique_tokens"),
    (["data.domains.verse.weight=-1"], "data.domains.verse.weight"),
])
def test_bad_domain_configs_name_the_key(domain_paths, tmp_path, overrides, named):
    with pytest.raises(ScarceError, match=named.replace(".", r"\.")):
        resolve_config({"data": {"domains": {n: {"source": p} for n, p in domain_paths.items()}}}, overrides)


def test_weight_shorthand_and_unknown_domain_source(tmp_path):
    config = resolve_config({"data": {"domains": {"kjv": 2.0, "python-stdlib": 1}}})
    assert config.data.domains["kjv"].weight == 2.0 and config.data.domains["python-stdlib"].source is None
    with pytest.raises(ScarceError, match="no-such-corpus"):
        prepare_data(resolve_config({"data": {"domains": {"no-such-corpus": 1.0}}}).data)


def test_a_mixture_run_and_a_one_domain_run_report_loss_per_domain(domain_paths, tmp_path):
    general = train(cfg(tmp_path, domain_paths, "train.tokens=1024"), progress=False)
    summary = runs.read_summary(general)
    assert summary["domain"] == "mixture" and summary["tokens_seen"] == 1024
    assert summary["general_tokens"] == 1024 and summary["domain_tokens"] == 0
    losses = {name: summary[f"final_val_loss.{name}"] for name in DOMAINS}
    store = prepare_data(cfg(tmp_path, domain_paths).data)  # no weights given: they follow each domain's size
    total = sum(s.train_token_count for s in store.domains.values())
    mean = sum(losses[n] * store.domains[n].train_token_count / total for n in DOMAINS)
    assert summary["final_val_loss"] == pytest.approx(mean)
    scored = evaluate_run(general, 512)  # `scarce eval`: the same per-domain samples, from the checkpoint
    assert all(scored[f"val_loss.{n}"] == pytest.approx(losses[n]) for n in DOMAINS)
    assert scored["val_loss"] == pytest.approx(mean)

    one = train(cfg(tmp_path, domain_paths, "train.tokens=512", verse=0, code=1, prose=0), progress=False)
    summary = runs.read_summary(one)
    assert summary["domain"] == "code" and summary["final_val_loss"] == summary["final_val_loss.code"]
    assert {f"final_val_loss.{n}" for n in DOMAINS} <= set(summary)
    (row,) = runs.load_runs_table(tmp_path / "runs", ["domain=code"])
    assert row["domain_tokens"] == 512 and row["domain_val_loss"] == summary["final_val_loss.code"]
