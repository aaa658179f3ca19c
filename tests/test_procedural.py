"""Procedural generators against slow, literal references: validity, layouts, loss masks, shuffled controls."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scarce.errors import ScarceError
from scarce.procedural.automata import ECA
from scarce.procedural.base import Examples
from scarce.procedural.copying import WW
from scarce.procedural.dyck import Dyck, DyckShuffle
from scarce.procedural.registry import TASKS, get_task, parse_params
from scarce.procedural.sequences import PAD, SEP, Delete, Identity, Reverse, Set, Sort, Stack, Union

FAST = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def draw(task, seed, n=16):
    return task.generate(np.random.default_rng(seed), n)


def plain_mask(length):
    return [False] + [True] * (length - 1)


# ---- k-Dyck ----------------------------------------------------------------------------------------------


def nested_balanced(row, k):
    stack = []
    for token in row:
        if token < k:
            stack.append(token)
        elif not stack or stack.pop() != token - k:
            return False
    return not stack


def shuffle_closes_only_open_types(row, k, max_depth):
    """Every close names a type that is open, the depth never passes the cap; the end may leave some open."""
    open_counts, depth = Counter(), 0
    for token in row:
        kind = token % k
        open_counts[kind] += 1 if token < k else -1
        depth += 1 if token < k else -1
        if open_counts[kind] < 0 or depth > max_depth:
            return False
    return True


@FAST
@given(k=st.integers(1, 8), half=st.integers(1, 100), seed=seeds)
def test_every_dyck_sequence_is_balanced_and_exactly_as_long_as_asked(k, half, seed):
    task = Dyck(k=k, length=2 * half)
    examples = draw(task, seed)
    assert examples.tokens.shape == (16, 2 * half)
    assert ((examples.tokens >= 0) & (examples.tokens < 2 * k)).all()
    assert all(nested_balanced(row, k) for row in examples.tokens.tolist())
    assert (examples.loss_mask == plain_mask(2 * half)).all()  # plain next-token loss everywhere
    assert task.check(examples).all()


@FAST
@given(k=st.integers(1, 8), half=st.integers(1, 100), max_depth=st.integers(1, 6), seed=seeds)
def test_every_dyck_shuffle_sequence_closes_only_open_types_within_the_depth_cap(k, half, max_depth, seed):
    task = DyckShuffle(k=k, length=2 * half, max_depth=max_depth)
    examples = draw(task, seed)
    assert examples.tokens.shape == (16, 2 * half)
    assert all(shuffle_closes_only_open_types(row, k, max_depth) for row in examples.tokens.tolist())
    assert task.check(examples).all()


def literal_walk_probabilities(length, max_depth=None, balanced=True):
    """Probability of each open/close pattern under the walk as written: empty → open; remaining <= depth
    (balanced only) or depth at the cap → close; otherwise open with probability 1/2."""
    patterns = {}

    def walk(t, depth, pattern, p):
        if t == length:
            patterns[pattern] = patterns.get(pattern, 0) + p
        elif depth == 0:
            walk(t + 1, 1, pattern + "(", p)
        elif (balanced and length - t <= depth) or (max_depth is not None and depth >= max_depth):
            walk(t + 1, depth - 1, pattern + ")", p)
        else:
            walk(t + 1, depth + 1, pattern + "(", p / 2)
            walk(t + 1, depth - 1, pattern + ")", p / 2)

    walk(0, 0, "", 1.0)
    return patterns


@pytest.mark.parametrize("task, max_depth, balanced", [(Dyck(k=3, length=10), None, True),
                                                      (DyckShuffle(k=3, length=10, max_depth=2), 2, False),
                                                      (DyckShuffle(k=3, length=10, max_depth=16), 16, False)])
def test_vectorized_walk_has_the_distribution_of_the_step_by_step_walk(task, max_depth, balanced):
    """k-Dyck ends balanced; the shuffle, as the reference, stops at the length with brackets left open."""
    expected = literal_walk_probabilities(10, max_depth, balanced)
    tokens = draw(task, seed=7, n=40_000).tokens
    seen = Counter("".join("(" if t < 3 else ")" for t in row) for row in tokens.tolist())
    assert set(seen) <= set(expected)
    for pattern, p in expected.items():
        assert abs(seen[pattern] / len(tokens) - p) < 0.01, pattern
    opens = tokens[tokens < 3]
    assert np.allclose(np.bincount(opens, minlength=3) / len(opens), 1 / 3, atol=0.01)  # uniform types


def test_dyck_shuffle_close_picks_uniformly_among_distinct_open_types():
    slots = np.array([[5, 5, 5, 9]] * 20_000)  # three brackets of type 5 open, one of type 9
    picks = DyckShuffle._pick_type_uniform(np.random.default_rng(0), slots, np.full(20_000, 4), np.arange(4))
    assert abs((slots[np.arange(20_000), picks] == 9).mean() - 0.5) < 0.02


def test_dyck_checkers_reject_broken_sequences():
    task = Dyck(k=4, length=12)
    good = draw(task, seed=1)
    wrong_type = good.tokens.copy()
    last = wrong_type[:, -1]
    wrong_type[:, -1] = np.where(last == 4, 5, 4)  # the final close names a different type
    assert not task.check(Examples(wrong_type, good.loss_mask)).any()
    unbalanced = good.tokens.copy()
    unbalanced[:, -1] = 0  # an open where the last close was
    assert not task.check(Examples(unbalanced, good.loss_mask)).any()
    assert not task.check(Examples(good.tokens, np.ones_like(good.loss_mask))).any()  # the first token is no target


# ---- sequence tasks --------------------------------------------------------------------------------------


def dedup(values):
    return list(dict.fromkeys(values))


def stack_reference(ops):
    stack = []
    for step, op in enumerate(ops):
        if step == len(ops) - 1 and len(stack) > 1:
            assert op == 0, "the last operation pops whenever it can (the reference)"
        if op == 0:
            assert len(stack) > 1, "pop on a stack of 0 or 1"
            stack.pop()
        else:
            assert op not in stack, "pushed a token already on the stack"
            stack.append(op)
    return stack[::-1]


def expected_output(task, row):
    """(the input part including separators, the output without pad) by the literal definition."""
    n = task.length
    if isinstance(task, Union):
        a, b = row[: n // 2], row[n // 2 + 1 : n + 1]
        assert row[n // 2] == SEP and row[n + 1] == SEP
        return n + 2, dedup(a + b)
    if isinstance(task, Delete):
        x, r = row[:n], row[n + 1]
        assert row[n] == SEP and row[n + 2] == SEP and 1 <= r <= 99  # as the reference: r uniform, in x or not
        rest = list(x)
        if r in x:
            rest.remove(r)  # the first occurrence
        return n + 3, rest
    x = row[:n]
    assert row[n] == SEP
    output = {
        Identity: lambda: x, Reverse: lambda: x[::-1], Sort: lambda: sorted(x), Set: lambda: dedup(x),
        Stack: lambda: stack_reference(x),
    }[type(task)]()
    return n + 1, output


@FAST
@given(kind=st.sampled_from([Identity, Reverse, Sort, Set, Union, Delete, Stack]), half=st.integers(1, 40), seed=seeds)
def test_sequence_task_outputs_are_correct_and_only_outputs_carry_loss(kind, half, seed):
    task = kind(length=2 * half)
    examples = draw(task, seed)
    assert examples.tokens.shape == (16, task.example_tokens)
    for row, mask in zip(examples.tokens.tolist(), examples.loss_mask.tolist()):
        start, output = expected_output(task, row)
        data = row[:start]
        if kind is Stack:
            assert all(0 <= t <= 99 for t in data[: task.length])
        else:
            assert all(1 <= t <= 99 for t in data if t != SEP)
        assert row[start:] == output + [PAD] * (task.length - len(output))
        assert mask == [False] * start + [True] * len(output) + [False] * (task.length - len(output))
    assert task.check(examples).all()


def test_sequence_tasks_use_the_published_layout():
    for kind in (Identity, Reverse, Sort, Set, Stack):
        assert kind().example_tokens == 129 and kind().vocab_size == 102
    assert Union().example_tokens == 130 and Delete().example_tokens == 131
    stack_sizes = [len(stack_reference(row[:64])) for row in draw(Stack(), seed=3, n=2000).tokens.tolist()]
    assert min(stack_sizes) >= 1 and 8 < np.mean(stack_sizes) < 16  # push-heavy for 2/3, pop-heavy after
    rows = draw(Delete(), seed=5, n=2000).tokens  # as the reference: r uniform over 1..99, so often not in x
    absent = np.array([r not in row[:64] for row, r in zip(rows.tolist(), rows[:, 65])])
    assert abs(absent.mean() - (98 / 99) ** 64) < 0.04
    # as the reference: pop-heavy from step ⌊2L/3⌋ = 42 of 64 on (pop with probability 0.75 when it may)
    ops = draw(Stack(), seed=4, n=4000).tokens[:, :64]
    sizes = np.cumsum(np.where(ops == 0, -1, 1), axis=1) - np.where(ops == 0, -1, 1)  # size before each op
    for step, p_pop in ((41, 0.25), (42, 0.75)):
        may = sizes[:, step] > 1
        assert abs((ops[may, step] == 0).mean() - p_pop) < 0.05, step


def test_sequence_checkers_reject_a_wrong_output_or_loss_on_pad():
    for kind in (Identity, Reverse, Sort, Set, Union, Delete, Stack):
        task = kind(length=8)
        good = draw(task, seed=2)
        wrong = good.tokens.copy()
        col = task.prefix_tokens  # the first output token
        wrong[:, col] = wrong[:, col] % 99 + 1
        assert not task.check(Examples(wrong, good.loss_mask)).any(), kind
        on_pad = good.loss_mask.copy()
        on_pad[:, -1] = True
        padded = good.tokens[:, -1] == PAD
        assert not task.check(Examples(good.tokens, on_pad))[padded].any(), kind


# ---- ECA and WW ------------------------------------------------------------------------------------------


def eca_reference(row, rule, steps):
    rows = [list(row)]
    for _ in range(steps):
        prev, w = rows[-1], len(row)
        rows.append([(rule >> (4 * prev[(i - 1) % w] + 2 * prev[i] + prev[(i + 1) % w])) & 1 for i in range(w)])
    return rows


@FAST
@given(rule=st.integers(0, 255), width=st.integers(3, 20), steps=st.integers(1, 12), seed=seeds)
def test_eca_evolution_matches_a_cell_by_cell_reference(rule, width, steps, seed):
    task = ECA(rule=rule, width=width, steps=steps)
    examples = draw(task, seed, n=4)
    for row, mask in zip(examples.tokens.tolist(), examples.loss_mask.tolist()):
        lines = [row[i : i + width + 1] for i in range(0, len(row), width + 1)]
        assert len(lines) == steps + 1 and all(line[-1] == 2 for line in lines)
        assert [line[:-1] for line in lines] == eca_reference(lines[0][:-1], rule, steps)
        assert mask == plain_mask(len(row))
    assert task.check(examples).all()
    broken = examples.tokens.copy()
    broken[:, -2] = 1 - broken[:, -2]  # flip the last cell
    assert not task.check(Examples(broken, examples.loss_mask)).any()


def test_eca_rule_110_by_default():
    assert ECA().rule == 110
    assert eca_reference([0, 0, 0, 1, 0], 110, 1)[1] == [0, 0, 1, 1, 0]


@FAST
@given(alphabet=st.integers(1, 20), max_len=st.integers(1, 30), seed=seeds)
def test_ww_is_a_string_a_separator_and_its_copy(alphabet, max_len, seed):
    task = WW(alphabet=alphabet, max_len=max_len)
    examples = draw(task, seed)
    for row, mask in zip(examples.tokens.tolist(), examples.loss_mask.tolist()):
        m = row.index(alphabet)
        assert 1 <= m <= max_len
        assert row[:m] == row[m + 1 : 2 * m + 1] and all(0 <= t < alphabet for t in row[:m])
        assert row[2 * m + 1 :] == [alphabet + 1] * (2 * max_len - 2 * m)
        assert mask == [False] + [True] * (2 * m) + [False] * (2 * max_len - 2 * m)  # plain loss, none on pad
    assert task.check(examples).all()


# ---- every task: reproducible, shuffled controls ---------------------------------------------------------

SMALL = {"dyck": {"k": 4, "length": 40}, "dyck_shuffle": {"k": 4, "length": 40}, "eca": {"width": 8, "steps": 4}}


@pytest.mark.parametrize("name", list(TASKS))
def test_same_seed_same_examples_and_shuffled_control_keeps_each_examples_tokens(name):
    task = get_task(name, SMALL.get(name, {}))
    a, b, c = draw(task, 5, n=32), draw(task, 5, n=32), draw(task, 6, n=32)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.loss_mask, b.loss_mask)
    assert not np.array_equal(a.tokens, c.tokens)
    assert task.check(a).all()
    shuffled = draw(task.model_copy(update={"shuffled": True}), 5, n=32)
    assert shuffled.tokens.shape == a.tokens.shape
    assert not np.array_equal(shuffled.tokens, a.tokens)  # order destroyed
    for orig, mixed, orig_mask, mixed_mask in zip(a.tokens, shuffled.tokens, a.loss_mask, shuffled.loss_mask):
        assert sorted(orig) == sorted(mixed)  # the same tokens
        assert sorted(orig[orig_mask]) == sorted(mixed[mixed_mask])  # the same counted targets
        assert not mixed_mask[0] and mixed[0] == orig[0]  # position 0 stays, never a target
        assert not (mixed_mask & (mixed == task.pad)).any()  # pad never carries loss


# ---- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, words",
    [
        ("dyk", {}, ["dyk", "dyck"]),
        ("dyck", {"depth": 3}, ["depth", "k, length"]),
        ("dyck", {"k": 0}, ["k", "greater than or equal to 1"]),
        ("dyck", {"length": 7}, ["length=7", "even"]),
        ("dyck", {"length": 0}, ["length"]),
        ("dyck_shuffle", {"max_depth": 0}, ["max_depth"]),
        ("union", {"length": 3}, ["length=3"]),
        ("delete", {"length": 1}, ["length"]),
        ("stack", {"length": 100}, ["length", "99"]),
        ("eca", {"rule": 256}, ["rule"]),
        ("ww", {"alphabet": 0}, ["alphabet"]),
        ("multiplication", {"digits": 10}, ["digits"]),
        ("addition", {"digits": 1}, ["digits"]),
        ("sort", {"length": "many"}, ["length", "many"]),
    ],
)
def test_bad_task_input_is_a_clear_error(name, params, words):
    with pytest.raises(ScarceError) as error:
        get_task(name, params)
    for word in words:
        assert word in str(error.value)


def test_parameters_parse_from_the_command_line():
    assert get_task("dyck", parse_params(["k=3", "length=10", "shuffled=true"])) == Dyck(k=3, length=10, shuffled=True)
    with pytest.raises(ScarceError, match="key=value"):
        parse_params(["k:3"])
