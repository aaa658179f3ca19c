"""Export a run to a standard Hugging Face `transformers` checkpoint: no custom code, no trust_remote_code.

scarce's decoder is exactly a Llama (pre-norm RMSNorm, rotate-half RoPE, SwiGLU with the gate first,
untied embeddings, no biases); with QK-norm it is exactly a Qwen3, which applies a per-head RMSNorm to q
and k before RoPE as scarce does. The export picks that architecture, splits scarce's fused projections
(qkv → q, k, v; gate_up → gate, up) and writes:

    config.json, generation_config.json   the architecture, float32, eos = bos = pad = <|endoftext|>
    model.safetensors                     the weights under transformers' names
    tokenizer.json, tokenizer_config.json scarce's own tokenizer as a fast tokenizer for AutoTokenizer
    scarce.json                           where it came from: run, checkpoint, rows dropped

Input-only embedding rows (the mask token that masked-input regularization appends after the vocabulary)
have no output logit and no token a user can type; they are dropped, so embeddings and head agree. Dropout
acts only in training (scarce applies it to the attention output), so the export sets it to 0. Before
anything is written, the exported model is run on probe tokens and must give scarce's logits.
"""

import dataclasses
import os
import shutil
from pathlib import Path

import torch

from scarce.atomic import make_temp_dir, write_json_atomic
from scarce.data.tokenizer import EOT, MASK, Tokenizer
from scarce.errors import ScarceError
from scarce.model import ModelShape, RMSNorm, Transformer

HF_EXTRA = "pip install 'scarce[hf]'"
# ModelShape fields the export carries over. A field added to ModelShape later is refused when set away from its
# default until it is mapped here: silently dropping it would export a different model.
MAPPED_FIELDS = {"n_layers", "d_model", "n_heads", "vocab_size", "seq_len", "ffn_hidden", "qk_norm", "rope_theta"}
# dropout acts only in training; input-only tokens (MIR's mask token) are rows the export drops
INFERENCE_ONLY_NEUTRAL = {"dropout", "extra_input_tokens"}
PROBE_TOKENS = 24
# fp32 on both sides, differing only in summation order (~1e-6 on small models, more with depth); a wrong
# mapping is off by O(1)
LOGIT_TOLERANCE = 1e-3


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ScarceError(f"exporting to Hugging Face needs the `transformers` package: {HF_EXTRA}") from None
    return transformers


def check_exportable(model: Transformer) -> None:
    """Refuse, naming it, any scarce option that no transformers architecture used here expresses."""
    shape = model.shape
    for field in dataclasses.fields(ModelShape):
        if field.name in MAPPED_FIELDS | INFERENCE_ONLY_NEUTRAL:
            continue
        if getattr(shape, field.name) != field.default:
            raise ScarceError(
                f"model.{field.name}={getattr(shape, field.name)!r} has no equivalent in Llama or Qwen3; "
                "this run cannot be exported to transformers"
            )
    eps = {m.eps for m in model.modules() if isinstance(m, RMSNorm)}
    if len(eps) != 1:
        raise ScarceError(f"the model's RMSNorms use different eps values {sorted(eps)}; transformers uses one")


def hf_config(shape: ModelShape, vocab_size: int, eot_id: int, rms_norm_eps: float):
    """The transformers config that computes what scarce's Transformer computes."""
    transformers = _transformers()
    common = dict(
        vocab_size=vocab_size,
        hidden_size=shape.d_model,
        intermediate_size=shape.hidden,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_heads,  # no grouped-query attention
        head_dim=shape.head_dim,
        hidden_act="silu",
        max_position_embeddings=shape.seq_len,
        rms_norm_eps=rms_norm_eps,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=False,
        attention_bias=False,
        attention_dropout=0.0,
        # scarce ends every document with <|endoftext|>, so it also marks where one begins (GPT-2's convention)
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        dtype="float32",
    )
    if shape.qk_norm:
        return transformers.Qwen3Config(**common, architectures=["Qwen3ForCausalLM"], use_sliding_window=False)
    return transformers.LlamaConfig(**common, architectures=["LlamaForCausalLM"], mlp_bias=False)


def hf_state_dict(state: dict[str, torch.Tensor], shape: ModelShape) -> tuple[dict[str, torch.Tensor], int]:
    """scarce's weights under transformers' names, and how many input-only embedding rows were dropped."""
    state = dict(state)
    take = state.pop
    head = take("head.weight")
    embed = take("embed.weight")
    if embed.shape[0] < head.shape[0]:
        raise ScarceError(f"embed.weight has {embed.shape[0]} rows, fewer than the head's {head.shape[0]} outputs")
    vocab = head.shape[0]
    out = {
        "model.embed_tokens.weight": embed[:vocab],  # rows past the head's vocabulary are input-only tokens
        "model.norm.weight": take("norm.weight"),
        "lm_head.weight": head,
    }
    d = shape.d_model
    for i in range(shape.n_layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = take(src + "attn.qkv.weight").split(d)  # rows: all q heads, then k, then v
        gate, up = take(src + "mlp.gate_up.weight").split(shape.hidden)  # gate first: silu(gate) * up
        out |= {
            dst + "self_attn.q_proj.weight": q,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.o_proj.weight": take(src + "attn.out.weight"),
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": take(src + "mlp.down.weight"),
            dst + "input_layernorm.weight": take(src + "attn_norm.weight"),
            dst + "post_attention_layernorm.weight": take(src + "mlp_norm.weight"),
        }
        if shape.qk_norm:
            out[dst + "self_attn.q_norm.weight"] = take(src + "attn.q_norm.weight")
            out[dst + "self_attn.k_norm.weight"] = take(src + "attn.k_norm.weight")
    if state:
        raise ScarceError(
            f"the model has weights no transformers architecture here holds: {', '.join(sorted(state))}; "
            "this run cannot be exported to transformers"
        )
    # own storage per tensor: safetensors refuses tensors that share memory (the split views do)
    return {name: t.detach().to("cpu", torch.float32).clone().contiguous() for name, t in out.items()}, embed.shape[0] - vocab


def tokenizer_config(tokenizer: Tokenizer, seq_len: int) -> dict:
    """tokenizer_config.json for AutoTokenizer: a plain fast tokenizer over scarce's tokenizer.json."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "pad_token": EOT,
        "unk_token": None,  # byte-level: every text encodes
        "additional_special_tokens": [MASK],
        # scarce encodes special-token strings inside text as plain text (no forged document boundaries)
        "split_special_tokens": True,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,  # decode must give back the text, spaces included
        "model_max_length": seq_len,
    }


@torch.no_grad()
def _verify(model: Transformer, hf_dir: Path, vocab: int) -> None:
    """Load the written checkpoint with transformers and compare logits on probe tokens."""
    transformers = _transformers()
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (2, min(PROBE_TOKENS, model.shape.seq_len)), generator=generator)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        ours = model(tokens.to(device)).float().cpu()
    finally:
        model.train(was_training)
    theirs = hf(tokens).logits.float()
    error = (ours - theirs).abs().max().item()
    if not torch.allclose(ours, theirs, rtol=LOGIT_TOLERANCE, atol=LOGIT_TOLERANCE):
        raise ScarceError(
            f"the exported {type(hf).__name__} does not reproduce scarce's logits (max difference {error:.3g}); "
            "nothing was written. Please report this with the run's config.json"
        )


def export_model(
    model: Transformer, tokenizer: Tokenizer, out_dir: Path, provenance: dict | None = None, verify: bool = True
) -> Path:
    """Write `model` and `tokenizer` as a transformers checkpoint in `out_dir` (new or empty); returns it."""
    _transformers()
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ScarceError(f"{out_dir} already exists and is not an empty directory; choose a new output directory")
    check_exportable(model)
    weights, dropped_rows = hf_state_dict(model.state_dict(), model.shape)
    vocab = weights["lm_head.weight"].shape[0]
    if tokenizer.vocab_size > vocab:
        raise ScarceError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model predicts only {vocab}; "
            "they do not belong together"
        )
    (eps,) = {m.eps for m in model.modules() if isinstance(m, RMSNorm)}
    config = hf_config(model.shape, vocab, tokenizer.eot_id, eps)

    from safetensors.torch import save_file

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    building = make_temp_dir(out_dir.parent, f".{out_dir.name}.export-")
    try:
        config.save_pretrained(building)
        _transformers().GenerationConfig(
            bos_token_id=tokenizer.eot_id, eos_token_id=tokenizer.eot_id, pad_token_id=tokenizer.eot_id
        ).save_pretrained(building)
        save_file(weights, building / "model.safetensors", metadata={"format": "pt"})
        tokenizer.save(building / "tokenizer.json")
        write_json_atomic(building / "tokenizer_config.json", tokenizer_config(tokenizer, model.shape.seq_len))
        write_json_atomic(
            building / "scarce.json",
            {**(provenance or {}), "architecture": config.architectures[0],
             "input_only_rows_dropped": dropped_rows, "tokenizer_fingerprint": tokenizer.fingerprint},
        )
        if verify:
            _verify(model, building, vocab)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.rename(building, out_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)  # gone after a successful rename
    return out_dir


def export_run(run_dir: Path, out_dir: Path, verify: bool = True) -> Path:
    """Export a run's newest intact checkpoint (see `export_model`)."""
    from scarce.checkpoint import checkpoint_dirs
    from scarce.evals.run import load_run_model

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ScarceError(f"{run_dir} is not a run directory: it has no config.json")
    if not checkpoint_dirs(run_dir / "checkpoints"):
        raise ScarceError(f"{run_dir} has no checkpoint to export; train it to the end or set train.checkpoint_every")
    _transformers()  # before loading the model and its token store
    _, model, store, checkpoint = load_run_model(run_dir)
    provenance = {"run": str(run_dir.resolve()), "checkpoint": checkpoint.name}
    return export_model(model, store.tokenizer, out_dir, provenance, verify)

