"""Export to Hugging Face transformers: the loaded model gives scarce's logits, AutoTokenizer gives scarce's ids,
for Llama (no QK-norm) and Qwen3 (QK-norm), GPT-2 and trained-BPE vocabularies, input-only embedding rows
(MIR's mask token) dropped; runs without checkpoints and unexpressible options are refused, nothing written."""

import dataclasses
import json
import sys

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from scarce.config import resolve_config  # noqa: E402
from scarce.data.corpora import load_documents  # noqa: E402
from scarce.data.tokenizer import gpt2_tokenizer, train_bpe  # noqa: E402
from scarce.errors import ScarceError  # noqa: E402
from scarce.export import export_model, export_run  # noqa: E402
from scarce.model import Transformer, model_shape  # noqa: E402
from scarce.train.trainer import train  # noqa: E402

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "  leading spaces, tabs\tand\nnewlines\n\n, digits 12345, unicode: héllo wörld — ‘quotes’ 日本語 🙂",
    "a document that quotes <|endoftext|> and <|mask|> keeps them as text",
    "",
]


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(load_documents("kjv")[:60], vocab_size=600)


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


def random_model(vocab_size, qk_norm, seq_len=32, input_rows=0, seed=0):
    """A micro model with every weight random (norm gains too, so a swapped or skipped norm shows)."""
    torch.manual_seed(seed)
    model = Transformer(model_shape("micro", vocab_size=vocab_size, seq_len=seq_len, qk_norm=qk_norm, rope_theta=500.0))
    if input_rows:  # masked-input regularization's mask token: an input embedding row with no output logit
        model.embed = torch.nn.Embedding(vocab_size + input_rows, model.shape.d_model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p)) if p.dim() == 1 else p.normal_(0, 0.1)
    return model.eval()


def assert_same_logits(model, hf_dir, tokens):
    hf = AutoModelForCausalLM.from_pretrained(hf_dir)  # no trust_remote_code: a stock architecture
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens), atol=1e-5, rtol=1e-5)
    return hf


@pytest.mark.parametrize("qk_norm, architecture", [(True, "Qwen3ForCausalLM"), (False, "LlamaForCausalLM")])
@pytest.mark.parametrize("vocab", ["gpt2", "bpe"])
def test_exported_model_and_tokenizer_match_scarce(tmp_path, request, vocab, qk_norm, architecture):
    tokenizer = request.getfixturevalue(vocab)
    model = random_model(tokenizer.vocab_size, qk_norm)
    out = export_model(model, tokenizer, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [architecture] and config["vocab_size"] == tokenizer.vocab_size
    assert config["eos_token_id"] == tokenizer.eot_id and config["tie_word_embeddings"] is False

    tokens = torch.randint(0, tokenizer.vocab_size, (3, 32), generator=torch.Generator().manual_seed(1))
    hf = assert_same_logits(model, out, tokens)
    assert type(hf).__name__ == architecture

    auto = AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        ids = auto(text)["input_ids"]
        assert ids == tokenizer.encode(text), text
        assert auto.decode(ids) == tokenizer.decode(ids) == text
    assert auto.eos_token_id == tokenizer.eot_id
    assert auto.convert_tokens_to_ids("<|mask|>") == tokenizer.mask_id


def test_input_only_embedding_rows_are_dropped(tmp_path, bpe):
    model = random_model(bpe.vocab_size, qk_norm=True, input_rows=1)
    assert model.embed.weight.shape[0] == model.head.weight.shape[0] + 1
    out = export_model(model, bpe, tmp_path / "hf", provenance={"run": "by hand"})
    tokens = torch.randint(0, bpe.vocab_size, (2, 32), generator=torch.Generator().manual_seed(2))
    hf = assert_same_logits(model, out, tokens)
    assert hf.get_input_embeddings().weight.shape[0] == bpe.vocab_size
    assert torch.equal(hf.get_input_embeddings().weight, model.embed.weight[: bpe.vocab_size])
    assert json.loads((out / "scarce.json").read_text())["input_only_rows_dropped"] == 1


def test_an_option_transformers_cannot_express_is_refused_and_named(tmp_path, bpe, monkeypatch):
    import scarce.export as export
    from scarce import model as scarce_model

    # a future ModelShape option (here a made-up one) that no mapping handles yet
    fields = [(f.name, f.type, f) for f in dataclasses.fields(scarce_model.ModelShape)]
    Shape = dataclasses.make_dataclass("ModelShape", [*fields, ("parallel_blocks", bool, False)], frozen=True)
    monkeypatch.setattr(export, "ModelShape", Shape)
    model = random_model(bpe.vocab_size, qk_norm=True)
    model.shape = Shape(**dataclasses.asdict(model.shape), parallel_blocks=True)
    with pytest.raises(ScarceError, match="model.parallel_blocks=True"):
        export_model(model, bpe, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("option", [{"positions": "learned"}, {"block": "gpt2"}])
def test_learned_positions_and_the_gpt2_block_are_refused_by_name(tmp_path, bpe, option):
    from scarce.model import Transformer, model_shape

    model = Transformer(model_shape("micro", vocab_size=bpe.vocab_size, seq_len=32, **option))
    (key, value), = option.items()
    with pytest.raises(ScarceError, match=f"model.{key}='{value}'"):
        export_model(model, bpe, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_weights_without_a_place_in_transformers_are_refused(tmp_path, bpe):
    model = random_model(bpe.vocab_size, qk_norm=False)
    model.blocks[0].attn.qkv.bias = torch.nn.Parameter(torch.zeros(3 * model.shape.d_model))
    with pytest.raises(ScarceError, match="blocks.0.attn.qkv.bias"):
        export_model(model, bpe, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_without_transformers_the_error_names_the_extra(tmp_path, bpe, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ScarceError, match=r"pip install 'scarce\[hf\]'"):
        export_model(random_model(bpe.vocab_size, qk_norm=True), bpe, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_existing_output_directory_is_refused(tmp_path, bpe):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("mine")
    with pytest.raises(ScarceError, match="not an empty directory"):
        export_model(random_model(bpe.vocab_size, qk_norm=True), bpe, tmp_path / "hf")
    assert [p.name for p in (tmp_path / "hf").iterdir()] == ["keep.txt"]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    config = resolve_config(
        {"name": "export", "runs_dir": str(runs_dir)},
        ["model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=2048",
         "data.eval_tokens=256", "train.batch_size=8"],
    )
    return train(config, progress=False)


def test_a_trained_run_exports_from_the_command_line(tmp_path, micro_run):
    from typer.testing import CliRunner

    from scarce.cli import app
    from scarce.evals.run import load_run_model

    result = CliRunner().invoke(app, ["export", str(micro_run), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    _, model, store, checkpoint = load_run_model(micro_run)
    assert json.loads((tmp_path / "hf" / "scarce.json").read_text())["checkpoint"] == checkpoint.name
    tokens = torch.as_tensor(store.val_tokens[:32].astype("int64"))[None]
    assert_same_logits(model.eval(), tmp_path / "hf", tokens)
    text = "And God said, Let there be light"
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").encode(text) == store.tokenizer.encode(text)


def test_a_run_without_a_checkpoint_is_refused(tmp_path, micro_run):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(micro_run / "config.json", bare / "config.json")
    with pytest.raises(ScarceError, match="has no checkpoint"):
        export_run(bare, tmp_path / "hf")
    with pytest.raises(ScarceError, match="not a run directory"):
        export_run(tmp_path / "nowhere", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
