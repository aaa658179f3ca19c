"""Sampling documents from a run or an ensemble, with a KV cache.

Every document starts from the end-of-text token (in the token store each document ends with it, so it
is what precedes a document) and ends when the model samples end-of-text, or at the context length.
Rows of a batch are independent slots: each keeps its own position, and a slot whose document ended
starts the next one at position 0 while the others continue, so no step is spent on padding until the
last documents finish.

The cached step runs the model's own modules on one new token per row: QK-norm, then RoPE at the row's
position, exactly as `Attention.forward` does for a whole sequence; keys and values of earlier positions
come from the cache. An ensemble keeps one cache per member and averages the members' logits at every
step (`scarce.evals.ensemble.combine_log_probs`). `cache=False` recomputes each row's whole prefix at
every step instead; the tests check both give the same documents.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from scarce.errors import ScarceError
from scarce.evals.combine import combine_log_probs
from scarce.model import Transformer, apply_rope


@dataclass
class Document:
    tokens: list[int]  # the sampled tokens, without the prompt and without the closing end-of-text
    end: str  # "eot": the model ended it; "length": it reached the context length


class KVCache:
    """Keys and values of every layer for `rows` slots (fp32: the dtype attention sees after RoPE, also
    under CUDA autocast).

    The cache holds only the first `capacity` positions, a multiple of CHUNK that covers the positions
    in use, and grows (or shrinks) by copying when they move past it. Attention then reads one contiguous
    block per layer: a slice of a full-context cache is strided, and torch's CPU matmuls copy a strided
    operand first, which measured 2-3x slower than attention itself (benchmarks/bench_sample.py).
    """

    CHUNK = 32

    def __init__(self, model: Transformer, rows: int, device: torch.device):
        s = model.shape
        self.seq_len = s.seq_len
        self.kv = torch.zeros(s.n_layers, 2, rows, s.n_heads, 0, s.head_dim, device=device)

    @property
    def capacity(self) -> int:
        return self.kv.shape[-2]

    def fit(self, span: int) -> None:
        """Hold positions 0..span-1: grow to the next multiple of CHUNK; shrink (rarely: when the longest
        document ends) once two chunks are unused, so a span moving around a boundary does not copy often."""
        wanted = min(self.seq_len, -(-span // self.CHUNK) * self.CHUNK)
        if wanted > self.capacity or wanted <= self.capacity - 2 * self.CHUNK:
            kv = self.kv.new_zeros(*self.kv.shape[:-2], wanted, self.kv.shape[-1])
            kept = min(wanted, self.capacity)
            kv[..., :kept, :] = self.kv[..., :kept, :]
            self.kv = kv


@torch.inference_mode()
def cached_step(model: Transformer, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor, span: int) -> torch.Tensor:
    """Next-token logits (B, vocab) for one new token per row at its own position.

    tokens, positions: (B,) on the model's device; span = max(positions) + 1, the positions in use.
    """
    B = tokens.shape[0]
    cache.fit(span)
    rows = torch.arange(B, device=tokens.device)
    cos, sin = model.rope_cos[positions][:, None, None, :], model.rope_sin[positions][:, None, None, :]
    # a row sees its own document only: later slots hold an earlier document's keys, or zeros
    hidden = (torch.arange(cache.capacity, device=tokens.device)[None, :] > positions[:, None])[:, None, None, :]
    x = model.embed_at(tokens, positions)[:, None, :]  # (B, 1, C)
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        q, k, v = attn.qkv(block.attn_norm(x)).view(B, 1, 3, attn.n_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(attn.q_norm(q), cos, sin), apply_rope(attn.k_norm(k), cos, sin)
        kv = cache.kv[layer]  # (2, B, H, capacity, head_dim), contiguous
        kv[:, rows, :, positions] = torch.stack([k[:, :, 0], v[:, :, 0]], dim=1).float()  # (B, 2, H, head_dim)
        # One query per row: two small batched matmuls and a softmax. Measured faster on CPU than
        # scaled_dot_product_attention, whose flash kernel is built for many queries.
        scores = (q.float() @ kv[0].transpose(-1, -2)) * attn.head_dim ** -0.5  # (B, H, 1, capacity)
        y = scores.masked_fill_(hidden, float("-inf")).softmax(dim=-1) @ kv[1]
        x = x + attn.out(y.to(x.dtype).transpose(1, 2).reshape(B, 1, -1))
        x = x + block.mlp(block.mlp_norm(x))
    return model.head(model.norm(x))[:, 0].float()


def pick_tokens(log_probs: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> torch.Tensor:
    """(B, vocab) log-probabilities → (B,) sampled tokens; temperature 0 is greedy.

    Sampling inverts each row's cumulative distribution at one uniform draw: one random number per row.
    torch.multinomial draws one per vocabulary entry (an exponential race) and took a third of a
    batch-64 sampling step on CPU.
    """
    if temperature == 0:
        return log_probs.argmax(dim=-1)
    scores = log_probs / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = F.softmax(scores, dim=-1)
    cdf = probs.double().cumsum(dim=-1)  # float64: rounding cannot give a token of probability 0 mass
    draws = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=torch.float64)
    picked = torch.searchsorted(cdf, draws * cdf[:, -1:], right=True)[:, 0]
    past_end = picked == cdf.shape[-1]  # the draw rounded up to the total (about 1 in 2^53)
    if past_end.any():
        last_possible = cdf.shape[-1] - 1 - (probs.flip(-1) > 0).int().argmax(dim=-1)
        picked = torch.where(past_end, last_possible, picked)
    return picked


def check_sampling(temperature: float, top_k: int | None, batch_size: int, n_tokens: int) -> None:
    if not temperature >= 0:
        raise ScarceError(f"--temperature must be ≥ 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ScarceError(f"--top-k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise ScarceError(f"--batch-size must be at least 1, got {batch_size}")
    if n_tokens < 1:
        raise ScarceError(f"--tokens must be at least 1, got {n_tokens}")


@torch.inference_mode()
def sample_documents(
    models: list[Transformer], n_tokens: int, eot_id: int, *, temperature: float = 1.0, top_k: int | None = None,
    batch_size: int = 64, seed: int = 0, cache: bool = True, combine: str = "logits", progress: bool = False,
    console: Console | None = None, stats: dict | None = None,
) -> Iterator[Document]:
    """Whole documents until they hold at least `n_tokens` tokens (documents in flight then finish); the
    end-of-text that closes a document is not one of its tokens.

    `models` (one, or an ensemble's members) are in eval mode on one device; the draws come from a
    generator seeded with `seed` on that device. `stats`, if given, receives tokens (the documents'),
    draws (every sampled token, end-of-text included: the model's work) and seconds.
    """
    check_sampling(temperature, top_k, batch_size, n_tokens)
    device = next(models[0].parameters()).device
    context = min(m.shape.seq_len for m in models)
    generator = torch.Generator(device).manual_seed(seed)
    caches = [KVCache(m, batch_size, device) for m in models] if cache else None
    tokens = [eot_id] * batch_size  # each row's next input (Python lists: one tensor per step, not 2 per row)
    positions = [0] * batch_size
    histories = [[eot_id] for _ in range(batch_size)]  # each row's document so far, with its prompt
    active = [True] * batch_size
    sampled, kept, started = 0, 0, time.perf_counter()
    most_draws = 100 * n_tokens + batch_size * context  # a model that (almost) only ends documents never fills N
    bar = Progress(
        TextColumn("sampling"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} tokens  {task.fields[rate]}"),
        TimeRemainingColumn(), console=console or Console(stderr=True), disable=not progress, transient=True,
    )
    with bar:
        task = bar.add_task("sample", total=n_tokens, rate="")
        while any(active):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                if cache:
                    step_tokens, step_positions = torch.tensor(tokens, device=device), torch.tensor(positions, device=device)
                    logits = [cached_step(m, c, step_tokens, step_positions, max(positions) + 1) for m, c in zip(models, caches)]
                else:
                    logits = [_recomputed_logits(m, histories, device) for m in models]
            picked = pick_tokens(combine_log_probs(logits, combine), temperature, top_k, generator).cpu()
            for row, token in enumerate(picked.tolist()):
                if not active[row]:
                    continue
                sampled += 1
                length = len(histories[row])  # tokens sampled into this document once this one counts
                if token != eot_id:
                    histories[row].append(token)
                    kept += 1
                if token == eot_id or length == context:
                    yield Document(histories[row][1:], "eot" if token == eot_id else "length")
                    histories[row] = [eot_id]
                    active[row] = kept < n_tokens
                    tokens[row], positions[row] = eot_id, 0
                else:
                    tokens[row], positions[row] = token, length
            if sampled > most_draws and kept < n_tokens:
                raise ScarceError(f"{sampled:,} draws gave only {kept:,} document tokens of --tokens {n_tokens:,}: the "
                                  "model nearly always samples end-of-text (train it longer, or raise the temperature)")
            rate = sampled / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=min(kept, n_tokens), rate=f"{rate:,.0f} tok/s")
    if stats is not None:
        stats.update(tokens=kept, draws=sampled, seconds=time.perf_counter() - started)


def _recomputed_logits(model: Transformer, histories: list[list[int]], device: torch.device) -> torch.Tensor:
    """The no-cache reference: each row's whole document so far through the ordinary forward pass."""
    return torch.stack([model(torch.tensor([h], device=device))[0, -1].float() for h in histories])
