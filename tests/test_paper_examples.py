"""examples/paper/: one config per headline experiment of the papers scarce reproduces. Each loads, names its
source and the published number it should reproduce, and its derived quantities (parameters, unique tokens,
epochs, tokens per step) are the paper's."""

from pathlib import Path

import pytest

from scarce.config import load_config
from scarce.shapes import model_shape
from scarce.studies.diagnose import PAPER_BATCH, PAPER_STEPS, diagnostic_config

PAPER = Path(__file__).parent.parent / "examples" / "paper"
GPT2_VOCAB = 50258  # GPT-2's 50,257 tokens and scarce's mask token (scarce.data.tokenizer)


def derived(name: str) -> dict:
    config = load_config(PAPER / name)
    shape = model_shape(vocab_size=GPT2_VOCAB, **config.model.model_dump())
    return {"config": config, "params": shape.total_params(), "unique_tokens": config.data.unique_tokens,
            "epochs": config.train.epochs, "tokens_per_step": config.train.batch_size * config.model.seq_len}


def test_every_paper_config_names_its_source_and_published_number():
    names = sorted(p.name for p in PAPER.glob("*.toml"))
    assert names == ["haystack-diagnostic.toml", "kim-150m-200m-tuned.toml", "procedural-gpt2-small-c4.toml",
                     "xu-72m-100m-baseline.toml", "xu-72m-100m-mir.toml"]
    for name in names:
        text = (PAPER / name).read_text()
        assert "# source:" in text and "published:" in text, name


@pytest.mark.parametrize("name,mir", [("xu-72m-100m-baseline.toml", False), ("xu-72m-100m-mir.toml", True)])
def test_xu_72m_at_100m_tokens_is_the_reference_recipe(name, mir):
    d = derived(name)
    config = d["config"]
    assert d["params"] == pytest.approx(72e6, rel=0.05)  # 6 x 512, GPT-2 vocabulary, untied
    assert (d["unique_tokens"], d["epochs"], d["tokens_per_step"]) == (100_000_000, 32, 262_144)
    assert (config.optim.lr, config.optim.weight_decay, config.optim.schedule) == (1e-2, 0.4, "wsd")
    assert (config.optim.warmup_fraction, config.optim.decay_fraction, config.optim.final_lr_fraction) == (0.01, 0.1, 0.01)
    assert config.model.dropout == 0.1 and config.model.n_heads is None and model_shape("72m").n_heads == 8
    assert (config.objective.kind == "mir") == mir
    if mir:
        o = config.objective
        assert (o.mir_weight, o.mask_ratio_min, o.mask_ratio_max, o.protected_prefix) == (0.4, 0.0, 0.5, 8)


def test_kim_150m_at_200m_tokens_is_the_tuned_recipe():
    d = derived("kim-150m-200m-tuned.toml")
    assert d["params"] == pytest.approx(150e6, rel=0.1)
    assert (d["unique_tokens"], d["epochs"], d["tokens_per_step"]) == (200_000_000, 16, 262_144)
    optim = d["config"].optim
    assert (optim.weight_decay, optim.schedule, optim.warmup_fraction, optim.final_lr_fraction) == (0.8, "cosine", 0.01, 0.0)


def test_procedural_gpt2_small_warmup_and_semantic_run_are_the_references():
    d = derived("procedural-gpt2-small-c4.toml")
    config = d["config"]
    model = config.model
    assert (model.n_layers, model.d_model, model.n_heads, model.seq_len) == (12, 768, 12, 2048)  # GPT-2 small's shape
    assert (model.block, model.positions, model.qk_norm) == ("gpt2", "learned", False)  # and its block
    assert config.optim.beta2 == config.procedural.optim.beta2 == 0.999  # the HF Trainer's AdamW
    assert d["tokens_per_step"] == 32 * 2048 and config.train.tokens // d["tokens_per_step"] == 10_000
    assert (config.optim.lr, config.optim.final_lr_fraction, config.optim.warmup_fraction) == (5e-4, 0.1, 0.0)
    p = config.procedural
    assert (p.task, p.params, p.steps, p.batch_size) == ("dyck", {"shuffled": False, "k": 64, "length": 2048}, 501, 32)
    assert (p.optim.lr, p.optim.weight_decay, p.optim.schedule) == (5e-4, 0.1, "constant")
    assert p.transfer == ["attention", "mlp", "norms"]


def test_the_haystack_example_is_what_scarce_diagnose_haystack_runs():
    example = load_config(PAPER / "haystack-diagnostic.toml")
    command = diagnostic_config("haystack", overrides=["train.eval_every=250"])
    assert (example.model, example.optim, example.procedural.task) == (command.model, command.optim, "haystack")
    assert example.train.batch_size == PAPER_BATCH
    assert example.train.tokens // (example.train.batch_size * example.model.seq_len) == PAPER_STEPS
    assert (example.train.eval_every, example.train.compile) == (250, True)
