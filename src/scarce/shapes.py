"""The model size ladder: shapes with their parameter and FLOP counts. No torch, so a config can check a
size and a planner can count FLOPs without importing the decoder (scarce.model builds it)."""

from dataclasses import dataclass

from scarce.errors import ScarceError

POSITIONS = ("rope", "learned")
# "llama": RMSNorm, SwiGLU MLP (8/3·d hidden), no biases; "gpt2": LayerNorm, GELU MLP (4·d hidden), biases on
# every linear layer and norm, as GPT-2's (the procedural paper's reference models)
BLOCKS = ("llama", "gpt2")


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    d_model: int
    n_heads: int
    vocab_size: int = 8192
    seq_len: int = 256
    ffn_hidden: int | None = None  # None: 8/3 · d_model rounded up to a multiple of 32, as in Llama
    qk_norm: bool = True
    dropout: float = 0.0
    rope_theta: float = 10000.0
    # "rope": rotary positions in attention; "learned": absolute position embeddings added to the input, as
    # GPT-2's wpe (the procedural paper's diagnostic models), the rotary tables then the identity
    positions: str = "rope"
    block: str = "llama"
    # input-only tokens after the vocabulary (MIR's mask token): embedding rows that are never predicted
    extra_input_tokens: int = 0

    @property
    def hidden(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        return 4 * self.d_model if self.block == "gpt2" else 32 * -(-(8 * self.d_model // 3) // 32)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def embedding_params(self) -> int:
        """Input embedding and output head (untied), and learned position embeddings when the model has them."""
        positions = self.seq_len if self.positions == "learned" else 0
        return (2 * self.vocab_size + self.extra_input_tokens + positions) * self.d_model

    def non_embedding_params(self) -> int:
        d, h = self.d_model, self.hidden
        if self.block == "gpt2":  # biases: q, k, v, out; the MLP's two layers; LayerNorms have a bias too
            attention, mlp, norm = 4 * d * d + 4 * d, 2 * d * h + h + d, 2 * d
        else:
            attention, mlp, norm = 4 * d * d, 3 * d * h, d
        norms = 2 * norm + (2 * self.head_dim if self.qk_norm else 0)
        return self.n_layers * (attention + mlp + norms) + norm  # + final norm

    def total_params(self) -> int:
        return self.embedding_params() + self.non_embedding_params()

    def train_flops_per_token(self) -> int:
        """Forward + backward FLOPs per token: 6 per matmul weight (head included) plus attention scores.

        Causal attention scores and values cost 2·2·T·d per layer in the forward pass if the masked half
        is counted, as PaLM's and nanoGPT's MFU conventions do; we do the same so MFU is comparable.
        """
        matmul_params = self.non_embedding_params() + self.vocab_size * self.d_model  # head, not lookup
        attention = self.n_layers * 2 * 2 * self.seq_len * self.d_model
        return 6 * matmul_params + 3 * attention


# The ladder: micro for tests, CPU-friendly sizes, then the MIR paper's shapes (docs/methods.md §2), whose names
# give total params with GPT-2's vocabulary. Head dim 64 from 256 wide up.
SIZES: dict[str, dict] = {
    "micro": dict(n_layers=2, d_model=64, n_heads=2),
    "tiny": dict(n_layers=4, d_model=128, n_heads=4),
    "small": dict(n_layers=4, d_model=256, n_heads=4),
    "medium": dict(n_layers=6, d_model=384, n_heads=6),
    "72m": dict(n_layers=6, d_model=512, n_heads=8),
    "140m": dict(n_layers=9, d_model=768, n_heads=12),
    "257m": dict(n_layers=12, d_model=1024, n_heads=16),
    "664m": dict(n_layers=18, d_model=1536, n_heads=24),
    "1p4b": dict(n_layers=24, d_model=2048, n_heads=32),
}


def model_shape(size: str, **overrides) -> ModelShape:
    if size not in SIZES:
        raise ScarceError(f"model.size: unknown size {size!r}; choose one of {', '.join(SIZES)}")
    shape = ModelShape(**{**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}})
    if shape.positions not in POSITIONS:
        raise ScarceError(f"model.positions: unknown {shape.positions!r}; choose one of {', '.join(POSITIONS)}")
    if shape.block not in BLOCKS:
        raise ScarceError(f"model.block: unknown {shape.block!r}; choose one of {', '.join(BLOCKS)}")
    if shape.d_model % shape.n_heads or shape.head_dim % 2:
        raise ScarceError(
            f"model: d_model={shape.d_model} must split into n_heads={shape.n_heads} heads of even size"
        )
    return shape
