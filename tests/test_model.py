import pytest
import torch

from scarce.errors import ScarceError
from scarce.model import SIZES, Transformer, model_shape


@pytest.mark.parametrize("options", [{}, {"block": "gpt2"}, {"block": "gpt2", "positions": "learned", "qk_norm": False}])
def test_counted_params_match_the_module(options):
    for size in ("micro", "tiny"):
        shape = model_shape(size, vocab_size=300, seq_len=32, **options)
        model = Transformer(shape)
        assert sum(p.numel() for p in model.parameters()) == shape.total_params()
        embeddings = model.embed.weight.numel() + model.head.weight.numel()
        embeddings += model.pos_embed.weight.numel() if model.pos_embed is not None else 0
        assert shape.total_params() - shape.non_embedding_params() == embeddings


def test_the_gpt2_block_computes_what_transformers_gpt2_computes():
    """block="gpt2" with learned positions and no QK-norm is GPT-2: its weights loaded into transformers'
    GPT2LMHeadModel (untied head) give the same logits, after a few optimizer steps moved every bias."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    shape = model_shape("micro", vocab_size=60, seq_len=16, block="gpt2", positions="learned", qk_norm=False)
    model = Transformer(shape)
    assert all(not p.any() for n, p in model.named_parameters() if n.endswith(".bias"))  # GPT-2's init
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        tokens = torch.randint(0, 60, (4, 16))
        torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=60, n_positions=16, n_embd=shape.d_model, n_layer=shape.n_layers, n_head=shape.n_heads,
        n_inner=shape.hidden, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False)).eval()
    ours = model.state_dict()
    weights = {"transformer.wte.weight": ours["embed.weight"], "transformer.wpe.weight": ours["pos_embed.weight"],
               "transformer.ln_f.weight": ours["norm.weight"], "transformer.ln_f.bias": ours["norm.bias"],
               "lm_head.weight": ours["head.weight"]}
    for i in range(shape.n_layers):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        for theirs, mine in {"ln_1": "attn_norm", "ln_2": "mlp_norm"}.items():
            weights |= {dst + theirs + ".weight": ours[src + mine + ".weight"], dst + theirs + ".bias": ours[src + mine + ".bias"]}
        for theirs, mine in {"attn.c_attn": "attn.qkv", "attn.c_proj": "attn.out", "mlp.c_fc": "mlp.up",
                             "mlp.c_proj": "mlp.down"}.items():  # GPT-2's Conv1D stores (in, out)
            weights |= {dst + theirs + ".weight": ours[src + mine + ".weight"].T, dst + theirs + ".bias": ours[src + mine + ".bias"]}
    hf.load_state_dict(weights, strict=False)
    tokens = torch.randint(0, 60, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(tokens), hf(tokens).logits, rtol=1e-4, atol=1e-4)


def test_ladder_names_match_the_mir_paper_sizes_with_gpt2_vocab():
    for name, millions in {"72m": 72, "140m": 140, "257m": 257, "664m": 664, "1p4b": 1400}.items():
        total = model_shape(name, vocab_size=50258).total_params() / 1e6
        assert abs(total - millions) / millions < 0.03, (name, total)
    assert 0.05e6 < model_shape("micro").non_embedding_params() < 0.2e6


def test_a_mir_model_starts_from_the_same_shared_weights_as_an_ntp_model_at_the_same_seed():
    shape = model_shape("micro", vocab_size=50, seq_len=16)
    torch.manual_seed(3)
    ntp = Transformer(shape).state_dict()
    torch.manual_seed(3)
    mir = Transformer(model_shape("micro", vocab_size=50, seq_len=16, extra_input_tokens=1)).state_dict()
    assert mir["embed.weight"].shape[0] == 51 and mir["embed.weight"][50].std() > 0.01  # the mask row is drawn too
    for name, value in ntp.items():
        assert torch.equal(mir[name][:50] if name == "embed.weight" else mir[name], value), name


@pytest.mark.parametrize("rows_per_position", [False, True])
def test_logits_at_positions_are_the_full_logits_there(rows_per_position):
    """model(tokens, positions) equals model(tokens) at those positions, with the last block run only at
    the positions (at most one per row) or fully (more), and so do the gradients of a loss on them."""
    torch.manual_seed(0)
    model = Transformer(model_shape("micro", vocab_size=50, seq_len=16))
    tokens = torch.randint(0, 50, (6, 16))
    positions = torch.arange(0, 6 * 16, 2) if rows_per_position else torch.tensor([3, 16 + 15, 4 * 16, 5 * 16 + 7])
    full = model(tokens).flatten(0, 1)[positions]
    full_grads = torch.autograd.grad(full.square().sum(), list(model.parameters()))
    selected = model(tokens, positions)
    torch.testing.assert_close(selected, full, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(selected.square().sum(), list(model.parameters())), full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_attention_is_causal_and_untied():
    torch.manual_seed(0)
    model = Transformer(model_shape("micro", vocab_size=50, seq_len=16)).eval()
    tokens = torch.randint(0, 50, (1, 16))
    changed = tokens.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 50
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])
    assert model.embed.weight.data_ptr() != model.head.weight.data_ptr()


def test_flops_per_token_is_six_times_matmul_params_plus_attention():
    shape = model_shape("small", vocab_size=4096, seq_len=256)
    matmul_params = shape.non_embedding_params() + 4096 * 256
    assert shape.train_flops_per_token() == 6 * matmul_params + 12 * shape.n_layers * 256 * 256


def test_bad_sizes_are_named():
    with pytest.raises(ScarceError, match="huge"):
        model_shape("huge")
    with pytest.raises(ScarceError, match="n_heads=3"):
        model_shape("micro", n_heads=3)
    assert set(SIZES) >= {"micro", "72m", "1p4b"}
