import json
from itertools import islice

import numpy as np
import pytest
import torch

from scarce.data.loader import EpochLoader
from scarce.errors import ScarceError


def rows(batch):
    """A batch's sequences as (rows, seq_len + 1) token windows."""
    return torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1)


def all_indices(loader):
    return np.concatenate([loader.sequence_indices(s) for s in range(loader.steps)])


def test_every_sequence_is_seen_exactly_once_per_epoch_in_a_fresh_order():
    tokens = np.arange(1001, dtype=np.uint16)
    loader = EpochLoader(tokens, seq_len=10, batch_size=7, epochs=3, seed=1)
    assert loader.n_sequences == 100 and loader.steps == 43  # 300 sequences, last batch short
    stream = all_indices(loader)
    epochs = stream.reshape(3, 100)
    for epoch in epochs:
        assert sorted(epoch) == list(range(100))
    assert not np.array_equal(epochs[0], epochs[1])
    assert loader.epochs_completed(loader.steps) == 3.0
    assert loader.tokens_seen(loader.steps) == 3 * 100 * 10


def test_sequences_are_consecutive_windows_sharing_one_boundary_token():
    tokens = np.arange(101, dtype=np.uint16)
    loader = EpochLoader(tokens, seq_len=10, batch_size=10, epochs=1, seed=0)
    source_batch = loader.batch(0)
    batch = rows(source_batch)
    assert source_batch.global_targets == 10 * 10 and batch.shape == (10, 11) and source_batch.loss_mask is None
    assert torch.equal(source_batch.targets[:, :-1], source_batch.inputs[:, 1:])
    starts = sorted(batch[:, 0].tolist())
    assert starts == list(range(0, 100, 10))
    assert all((row[1:] - row[:-1] == 1).all() for row in batch)


def test_order_depends_only_on_seed_and_ranks_partition_each_batch():
    tokens = np.arange(2001, dtype=np.uint16)
    a = EpochLoader(tokens, 16, 8, 2, seed=5)
    b = EpochLoader(tokens, 16, 8, 2, seed=5)
    assert np.array_equal(all_indices(a), all_indices(b))
    assert not np.array_equal(all_indices(a), all_indices(EpochLoader(tokens, 16, 8, 2, seed=6)))
    ranks = [EpochLoader(tokens, 16, 8, 2, seed=5, rank=r, world_size=2) for r in range(2)]
    for step in (0, 3, a.steps - 1):
        whole = rows(a.batch(step))
        parts = np.concatenate([rows(r.batch(step)).numpy() for r in ranks])
        assert sorted(map(tuple, parts)) == sorted(map(tuple, whole.numpy()))


def test_resume_from_state_continues_the_same_stream():
    tokens = np.arange(501, dtype=np.uint16)
    full = [rows(b).numpy() for b in EpochLoader(tokens, 10, 4, 2, seed=3)]
    first = EpochLoader(tokens, 10, 4, 2, seed=3)
    head = [rows(b).numpy() for b in islice(first, 5)]
    state = first.state_dict()
    second = EpochLoader(tokens, 10, 4, 2, seed=3)
    second.load_state_dict(state)
    rest = [rows(b).numpy() for b in second]
    assert all(np.array_equal(x, y) for x, y in zip(head + rest, full)) and len(head + rest) == len(full)
    changed = EpochLoader(tokens, 10, 4, 3, seed=3)
    with pytest.raises(ScarceError, match="epochs"):
        changed.load_state_dict(state)


def test_sequence_longer_than_budget_is_a_clear_error():
    with pytest.raises(ScarceError, match="model.seq_len=64"):
        EpochLoader(np.arange(50, dtype=np.uint16), seq_len=64, batch_size=2, epochs=1, seed=0)


def sparse_store(path, train_tokens: int, tail: np.ndarray):
    """A format-3 store of `train_tokens` uint16 tokens that takes almost no disk: a sparse train.bin of
    zeros but for `tail` at its end, one document per split."""
    from scarce.data.store import DOCUMENT_ARRAYS, STORE_FORMAT_VERSION, open_store

    path.mkdir()
    with open(path / "train.bin", "wb") as f:
        f.truncate(train_tokens * 2)
        f.seek((train_tokens - len(tail)) * 2)
        f.write(tail.astype(np.uint16).tobytes())
    np.zeros(2, dtype=np.uint16).tofile(path / "val.bin")
    for name in DOCUMENT_ARRAYS:
        np.save(path / f"{name}.npy", np.array([1 if name == "val_document_bytes" else 0], dtype=np.int64))
    meta = {"format_version": STORE_FORMAT_VERSION, "dtype": "uint16", "eot_id": 0, "mask_id": 1, "vocab_size": 4096,
            "train_tokens": train_tokens, "val_tokens": 2, "val_bytes": 1, "train_documents": 1, "val_documents": 1}
    (path / "meta.json").write_text(json.dumps(meta))
    return open_store(path)


def test_a_store_of_600m_tokens_loads_batches_from_anywhere_in_it(tmp_path):
    tokens, seq_len = 600_000_000, 256
    tail = np.arange(2, 2 + 3 * seq_len) % 4096
    store = sparse_store(tmp_path / "big", tokens, tail)
    assert (store.path / "train.bin").stat().st_blocks * 512 < 2**20  # sparse: the test writes ~1.5 KB
    loader = EpochLoader(store.budget(tokens), seq_len=seq_len, batch_size=16, epochs=1, seed=0)
    assert loader.n_sequences == (tokens - 1) // seq_len
    last = loader.n_sequences - 1  # the last whole sequence lies in the written tail
    step = int(np.flatnonzero(loader._permutation(0) == last)[0]) // 16
    batch_rows = rows(loader.batch(step))
    starts = np.sort(loader.sequence_indices(step)) * seq_len
    expected = np.stack([store.train_tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    assert torch.equal(batch_rows, torch.from_numpy(expected))
    tail_row = batch_rows[int(np.flatnonzero(starts == last * seq_len)[0])]
    assert tail_row.count_nonzero() > seq_len // 2 and tail_row[-1] == tail[-1 - (tokens - 1 - (last + 1) * seq_len)]
