"""The procedural batch source (exact resume, ranks, rows), the diagnostics and their scoring, the CLI."""

import json
from itertools import islice

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from scarce.cli import app
from scarce.data.batch import BatchSource
from scarce.data.procedural import ProceduralSource
from scarce.errors import ScarceError
from scarce.evals.diagnostics import accuracy, heldout_batch
from scarce.procedural.base import Examples
from scarce.procedural.diagnostics import HELDOUT_EXAMPLES, Addition, Haystack, Multiplication, ReversedAddition
from scarce.procedural.registry import get_task

runner = CliRunner()


def same_batches(a, b):
    return all(
        torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets) and torch.equal(x.loss_mask, y.loss_mask)
        and x.global_targets == y.global_targets
        for x, y in zip(a, b, strict=True)
    )


# ---- the batch source ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, params, seq_len", [("dyck", {"k": 4, "length": 40}, 16), ("sort", {"length": 8}, 64),
                                                   ("haystack", {}, 62), ("addition", {}, 40)])
def test_resuming_from_a_state_dict_continues_with_identical_batches(name, params, seq_len):
    task = get_task(name, params)
    source = ProceduralSource(task, seq_len=seq_len, batch_size=6, steps=9, seed=3)
    assert isinstance(source, BatchSource)
    assert source.unique_tokens == 0 and source.epochs_completed(5) == 0.0
    stream = iter(source)
    list(islice(stream, 4))
    state = source.state_dict()
    rest = list(stream)
    assert source.step == 9 and len(rest) == 5

    fresh = ProceduralSource(task, seq_len=seq_len, batch_size=6, steps=9, seed=3)
    fresh.load_state_dict(json.loads(json.dumps(state)))  # a checkpoint stores it as JSON-able data
    assert same_batches(rest, list(fresh))
    assert fresh.counted_targets == source.counted_targets
    assert source.tokens_seen(9) == 9 * 6 * seq_len


def test_a_state_from_a_differently_configured_source_is_refused():
    source = ProceduralSource(get_task("dyck", {"k": 4, "length": 40}), 16, 4, 5, seed=0)
    other = ProceduralSource(get_task("dyck", {"k": 5, "length": 40}), 16, 4, 5, seed=0)
    with pytest.raises(ScarceError, match="params"):
        other.load_state_dict(source.state_dict())
    with pytest.raises(ScarceError, match="seed"):
        ProceduralSource(get_task("dyck", {"k": 4, "length": 40}), 16, 4, 5, seed=1).load_state_dict(source.state_dict())


def test_ranks_take_interleaved_rows_of_one_global_batch():
    task = get_task("set", {"length": 6})
    whole = ProceduralSource(task, 13, batch_size=7, steps=3, seed=2)
    ranks = [ProceduralSource(task, 13, batch_size=7, steps=3, seed=2, rank=r, world_size=3) for r in range(3)]
    for step in range(3):
        full = whole.batch(step)
        for r, source in enumerate(ranks):
            part = source.batch(step)
            assert torch.equal(part.inputs, full.inputs[r::3]) and torch.equal(part.loss_mask, full.loss_mask[r::3])
            assert part.global_targets == full.global_targets == int(full.loss_mask.sum())


def test_batch_depends_on_the_step_alone():
    task = get_task("stack", {"length": 10})
    a = ProceduralSource(task, 30, 4, 10, seed=5)
    b = ProceduralSource(task, 30, 4, 10, seed=5)
    list(islice(iter(b), 7))
    assert same_batches([a.batch(7)], [b.batch(7)])
    assert not torch.equal(a.batch(7).inputs, a.batch(8).inputs)


def test_short_examples_are_packed_and_no_target_crosses_an_example_boundary():
    task = get_task("reverse", {"length": 4})  # 9 tokens per example
    source = ProceduralSource(task, seq_len=19, batch_size=3, steps=1, seed=0)  # rows of 20: 2 examples + 2 pad
    tokens, mask = source.global_rows(0)
    assert tokens.shape == (3, 20) and (tokens[:, 18:] == task.pad).all() and not mask[:, 18:].any()
    for row, row_mask in zip(tokens, mask):
        for example, example_mask in ((row[:9], row_mask[:9]), (row[9:18], row_mask[9:18])):
            assert example[4] == 100 and list(example[5:]) == list(example[3::-1])
            assert list(example_mask) == [False] * 5 + [True] * 4
    unpacked = ProceduralSource(task, seq_len=19, batch_size=3, steps=1, seed=0, pack=False).global_rows(0)[0]
    assert (unpacked[:, 9:] == task.pad).all()


def test_long_examples_of_plain_tasks_are_cut_into_windows_that_share_one_token():
    task = get_task("dyck", {"k": 3, "length": 20})
    source = ProceduralSource(task, seq_len=7, batch_size=6, steps=1, seed=4)  # 3 windows per example
    tokens, mask = source.global_rows(0)
    for first in (0, 3):
        w = tokens[first : first + 3]
        assert w[0, -1] == w[1, 0] and w[1, -1] == w[2, 0]
        example = np.concatenate([w[0], w[1, 1:], w[2, 1:]])[:20]
        assert (np.concatenate([w[0], w[1, 1:], w[2, 1:]])[20:] == task.pad).all()
        assert task.check(Examples(example[None], np.array([[False] + [True] * 19]))).all()
        assert mask[first : first + 3, 1:].sum() == 19  # every token after the first is a target exactly once


def test_an_input_output_task_longer_than_the_context_is_refused():
    with pytest.raises(ScarceError, match="model.seq_len >= 128"):
        ProceduralSource(get_task("identity"), seq_len=64, batch_size=2, steps=1, seed=0)


# ---- diagnostics -----------------------------------------------------------------------------------------


def test_haystack_examples_have_the_published_layout():
    examples = Haystack().generate(np.random.default_rng(0), 3000)
    assert examples.tokens.shape == (3000, 63)
    pair_counts = []
    for row, mask in zip(examples.tokens.tolist(), examples.loss_mask.tolist()):
        n = next(i for i, t in enumerate(row) if t >= 158) // 2
        keys, values = [k - 128 for k in row[0 : 2 * n : 2]], row[1 : 2 * n : 2]
        assert 1 <= n <= 30 and len(set(keys)) == n and all(0 <= k <= 29 for k in keys)
        assert all(1 <= v <= 127 for v in values)
        q = row[2 * n] - 158
        assert q in keys and row[2 * n + 1] == values[keys.index(q)]
        assert row[2 * n + 2 :] == [0] * (61 - 2 * n)
        assert mask == [i == 2 * n + 1 for i in range(63)]  # loss only where v_q is the target
        pair_counts.append(n)
    assert set(pair_counts) == set(range(1, 31))  # n ~ Uniform{1..30}
    assert Haystack().check(examples).all()


def test_haystack_training_stream_never_emits_a_held_out_example():
    task = Haystack()
    heldout = task.heldout()
    assert len(heldout) == HELDOUT_EXAMPLES and np.array_equal(heldout.tokens, Haystack().heldout().tokens)
    held = {row.tobytes() for row in heldout.tokens}
    # one-pair examples are few (30 keys × 127 values), so an unfiltered stream repeats held-out ones
    raw = task._generate(np.random.default_rng(1), 30_000)
    assert sum(row.tobytes() in held for row in raw.tokens) > 10
    streamed = task.generate(np.random.default_rng(1), 30_000)
    assert not any(row.tobytes() in held for row in streamed.tokens)
    source = ProceduralSource(task, seq_len=62, batch_size=500, steps=20, seed=1)
    for batch in source:
        rows = torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1).numpy().astype(heldout.tokens.dtype)
        assert not any(row.tobytes() in held for row in rows)


def reference_answer(task, a, b):
    """As the reference code writes it: the answer in its natural length (str(a + b)), reversed for reversed addition."""
    answer = str(a * b if isinstance(task, Multiplication) else a + b)
    return [int(c) for c in (answer[::-1] if isinstance(task, ReversedAddition) else answer)]


@pytest.mark.parametrize("task", [Addition(), ReversedAddition(), Multiplication()], ids=lambda t: t.name)
def test_arithmetic_answers_are_right_and_every_answer_digit_and_the_stop_carry_loss(task):
    examples = task.generate(np.random.default_rng(0), 200)
    d = task.digits
    for row, mask in zip(examples.tokens.tolist(), examples.loss_mask.tolist()):
        a_digits, b_digits = row[:d], row[d + 1 : 2 * d + 1]
        if isinstance(task, ReversedAddition):
            a_digits, b_digits = a_digits[::-1], b_digits[::-1]
        a, b = int("".join(map(str, a_digits))), int("".join(map(str, b_digits)))
        assert 10 ** (d - 1) <= a < 10**d and 10 ** (d - 1) <= b < 10**d  # exactly d digits, no leading zero
        assert row[d] == (11 - 1) and row[2 * d + 1] == 11  # + or * is 10, = is 11
        answer = [20 + x for x in reference_answer(task, a, b)] + [30]
        pad = len(row) - (2 * d + 2) - len(answer)
        assert len(row) == (5 * d + 4 if isinstance(task, Multiplication) else 3 * d + 4)  # the reference's max_lenl
        assert row[2 * d + 2 :] == answer + [12] * pad
        assert mask == [False] * (2 * d + 2) + [True] * len(answer) + [False] * pad
    assert task.check(examples).all()


def test_accuracy_scores_exact_match_and_every_answer_digit():
    task = Addition()
    batch = heldout_batch(task)
    assert accuracy(batch.targets, batch, task) == {"exact_match": 1.0, "examples": HELDOUT_EXAMPLES, "digit_accuracy": 1.0}
    first_digit = 2 * task.digits + 1  # input position whose target is the first answer digit
    wrong = batch.targets.clone()
    wrong[:10, first_digit] = (wrong[:10, first_digit] - 20 + 1) % 10 + 20  # the first digit wrong in 10 examples
    rows = torch.arange(10, 30)
    wrong[rows, (batch.targets[rows] == 30).int().argmax(dim=1)] = 0  # the stop wrong in 20 examples
    logits = torch.nn.functional.one_hot(wrong, task.vocab_size).float()
    scores = accuracy(logits, batch, task)
    assert scores["exact_match"] == pytest.approx(1 - 30 / HELDOUT_EXAMPLES)
    answer_digits = int((batch.loss_mask & (batch.targets != 30)).sum())  # natural lengths: 5 or 6 digits
    assert scores["digit_accuracy"] == pytest.approx(1 - 10 / answer_digits)
    hay = heldout_batch(Haystack())
    guess = hay.targets.clone()
    guess[::4] = 0
    assert accuracy(guess, hay, Haystack()) == {"exact_match": 0.75, "examples": HELDOUT_EXAMPLES}
    with pytest.raises(ScarceError, match="do not match"):
        accuracy(guess[:, :5], hay, Haystack())


# ---- the CLI ---------------------------------------------------------------------------------------------


def test_procedural_list_names_every_task_with_its_defaults():
    result = runner.invoke(app, ["procedural", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for word in ("dyck", "dyck_shuffle", "stack", "eca", "rule=110", "ww", "haystack", "k=64", "length=2048"):
        assert word in result.output


def test_procedural_sample_prints_or_writes_jsonl_with_the_task_token_ids(tmp_path):
    result = runner.invoke(app, ["procedural", "sample", "sort", "length=5", "-n", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("loss on positions 6-10") == 2
    out = tmp_path / "dyck.jsonl"
    result = runner.invoke(app, ["procedural", "sample", "dyck", "k=2", "length=8", "-n", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4 and all(len(x["tokens"]) == 8 and x["loss_mask"] == [False] + [True] * 7 for x in lines)
    expected = get_task("dyck", {"k": 2, "length": 8}).generate(np.random.default_rng(0), 4).tokens.tolist()
    assert [x["tokens"] for x in lines] == expected


@pytest.mark.parametrize("args, words", [(["nope"], ["nope"]), (["dyck", "k=0"], ["k"]), (["dyck", "x=1"], ["x"]),
                                         (["dyck", "-n", "0"], ["-n"])])
def test_procedural_sample_bad_input_is_an_error_naming_it(args, words, tmp_path):
    result = runner.invoke(app, ["procedural", "sample", *args, "--out", str(tmp_path / "x.jsonl")])
    assert isinstance(result.exception, ScarceError)
    assert all(w in str(result.exception) for w in words) and not (tmp_path / "x.jsonl").exists()
