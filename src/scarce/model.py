"""The decoder: a Llama-style transformer, and the named size ladder with its parameter and FLOP counts.

Pre-norm RMSNorm, rotary position embeddings (or learned absolute ones, GPT-2's), SwiGLU MLP, optional
QK-norm, untied input and output embeddings, no biases, causal attention through
scaled_dot_product_attention, dropout on the attention output (the MIR recipe uses 0.1). `block="gpt2"`
swaps in GPT-2's block (LayerNorm, a GELU MLP 4× wide, biases), the procedural paper's reference models.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from scarce.shapes import SIZES, ModelShape, model_shape  # noqa: F401  (the ladder, re-exported: scarce.model is its documented home)


def weight_group(name: str) -> str:
    """The group of a parameter, by its name in Transformer.state_dict(): what weight transfer copies.

    norms are the residual stream's norms (before attention, before the MLP, final: RMSNorm gains, or
    LayerNorm gains and biases in GPT-2's block); QK-norm gains belong to attention, whose computation they
    are part of, as do its projections' biases.
    """
    if name.startswith("embed."):
        return "embeddings"
    if name.startswith("head."):
        return "head"
    if name.startswith("pos_embed."):
        return "positions"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    return "norms"  # blocks.*.attn_norm, blocks.*.mlp_norm, norm


def transferred(name: str, groups) -> bool:
    """Whether weight `name` is copied when `groups` are: whole groups (weight_group), or the procedural
    reference's narrower selections, "heads" (the q/k/v projection only) and "attn+ln" (attention and the
    norm before it)."""
    return (weight_group(name) in groups or ("heads" in groups and ".attn.qkv." in name)
            or ("attn+ln" in groups and (weight_group(name) == "attention" or ".attn_norm." in name)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(shape: ModelShape) -> tuple[torch.Tensor, torch.Tensor]:
    if shape.positions == "learned":  # the identity rotation: positions come from the input's embeddings
        return torch.ones(shape.seq_len, shape.head_dim // 2), torch.zeros(shape.seq_len, shape.head_dim // 2)
    inv_freq = 1.0 / shape.rope_theta ** (torch.arange(0, shape.head_dim, 2).float() / shape.head_dim)
    angles = torch.outer(torch.arange(shape.seq_len).float(), inv_freq)  # (T, head_dim/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # x: (B, H, T, head_dim); rotate the two halves of each head (the GPT-NeoX / Llama-HF layout)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def norm(shape: ModelShape) -> nn.Module:
    return nn.LayerNorm(shape.d_model) if shape.block == "gpt2" else RMSNorm(shape.d_model)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.n_heads, self.head_dim = shape.n_heads, shape.head_dim
        bias = shape.block == "gpt2"
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model, bias=bias)
        self.out = nn.Linear(shape.d_model, shape.d_model, bias=bias)
        self.q_norm = RMSNorm(shape.head_dim) if shape.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(shape.head_dim) if shape.qk_norm else nn.Identity()
        self.dropout = nn.Dropout(shape.dropout)

    def forward(self, x, cos, sin, positions=None):
        """x (B, T, C) → (B, T, C); with positions (flat indices into B·T), only those queries: (len, C)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        if positions is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.dropout(self.out(y.transpose(1, 2).reshape(B, T, C)))
        rows, cols = positions // T, positions % T  # each query sees its own row up to itself
        visible = torch.arange(T, device=x.device) <= cols[:, None]
        y = F.scaled_dot_product_attention(q[rows, :, cols].unsqueeze(2), k[rows], v[rows], attn_mask=visible[:, None, None])
        return self.dropout(self.out(y.reshape(len(positions), C)))


class MLP(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate_up = nn.Linear(shape.d_model, 2 * shape.hidden, bias=False)
        self.down = nn.Linear(shape.hidden, shape.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class GELUMLP(nn.Module):
    """GPT-2's MLP: up, GELU (its tanh approximation), down; with biases."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.up = nn.Linear(shape.d_model, shape.hidden)
        self.down = nn.Linear(shape.hidden, shape.d_model)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.attn_norm, self.attn = norm(shape), Attention(shape)
        self.mlp_norm, self.mlp = norm(shape), GELUMLP(shape) if shape.block == "gpt2" else MLP(shape)

    def forward(self, x, cos, sin, positions=None):
        if positions is None:
            x = x + self.attn(self.attn_norm(x), cos, sin)
        else:  # only the positions' residual stream goes on: (len(positions), C)
            x = x.flatten(0, 1).index_select(0, positions) + self.attn(self.attn_norm(x), cos, sin, positions)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        # the constructor draws the vocabulary's rows only, as a model without input-only rows does; those rows
        # are appended here and drawn last (reset_parameters)
        vocab_rows = nn.Embedding(shape.vocab_size, shape.d_model).weight.detach()
        self.embed = nn.Embedding(shape.vocab_size + shape.extra_input_tokens, shape.d_model,
                                  _weight=torch.cat([vocab_rows, vocab_rows.new_empty(shape.extra_input_tokens, shape.d_model)]))
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layers))
        self.norm = norm(shape)
        self.head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        # registered last, so a rotary model's draws at a seed are the same as before it existed
        self.pos_embed = nn.Embedding(shape.seq_len, shape.d_model) if shape.positions == "learned" else None
        cos, sin = rope_tables(shape)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        # GPT-2 style: N(0, 0.02), residual output projections scaled down by depth
        vocab = self.shape.vocab_size
        for name, p in self.named_parameters():
            if name.endswith(".bias"):  # GPT-2's block: zero, as GPT-2 initializes them
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / (2 * self.shape.n_layers) ** 0.5 if name.endswith(("out.weight", "down.weight")) else 0.02
                nn.init.normal_(p[:vocab] if name == "embed.weight" else p, mean=0.0, std=std)
        # input-only rows (MIR's mask token) drawn last: a run with them starts from the same shared weights
        # as one without at the same seed
        nn.init.normal_(self.embed.weight[vocab:], mean=0.0, std=0.02)

    def embed_at(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The input embeddings of `tokens` at `positions` (broadcastable to tokens): with learned positions,
        their rows added."""
        x = self.embed(tokens)
        return x if self.pos_embed is None else x + self.pos_embed(positions)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) int64 → logits (B, T, vocab) in fp32.

        positions: flat indices into the B·T positions (int64, e.g. a loss mask's `flatten().nonzero()`);
        then only those positions' logits, (len(positions), vocab), so the output head and the loss cost
        only what the counted positions need (a haystack row counts 1 of its 62). With at most one position
        per row on average, the last block too runs only those queries (each gathers its row's keys and
        values, a row per position: with more positions the whole last block is cheaper).
        """
        T = tokens.shape[1]
        if T > self.shape.seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than the model's seq_len {self.shape.seq_len}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed(tokens)
        if self.pos_embed is not None:  # no position index built for a rotary model
            x = x + self.pos_embed.weight[:T]
        for block in self.blocks[:-1]:
            x = block(x, cos, sin)
        last = self.blocks[-1]
        if positions is None:
            x = last(x, cos, sin)
        elif len(positions) <= len(tokens):
            x = last(x, cos, sin, positions)
        else:
            x = last(x, cos, sin).flatten(0, 1).index_select(0, positions)
        return self.head(self.norm(x)).float()
