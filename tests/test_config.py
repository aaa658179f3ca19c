import pytest

from scarce.config import load_config, resolve_config
from scarce.errors import ScarceError


def test_toml_with_dotted_overrides(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('name = "x"\n[model]\nsize = "tiny"\n[optim]\nweight_decay = 0.1\n')
    cfg = load_config(path, ["model.size=micro", "optim.weight_decay=0.8", "data.corpus=some/file.txt"])
    assert (cfg.model.size, cfg.optim.weight_decay, cfg.data.corpus, cfg.name) == ("micro", 0.8, "some/file.txt", "x")


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.weight_dacay=0.8", "optim.weight_dacay"),
        ("optim.weight_decay=-1", "optim.weight_decay"),
        ("train.epochs=many", "train.epochs"),
        ("optim.schedule=linear", "optim.schedule"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, key):
    with pytest.raises(ScarceError, match=key.replace(".", r"\.")):
        resolve_config({}, [override])


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ScarceError, match="missing.toml"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nsize=1")
    with pytest.raises(ScarceError, match="bad.toml"):
        load_config(bad)
    with pytest.raises(ScarceError, match="look like"):
        resolve_config({}, ["optim.lr"])


def test_batch_must_split_into_accumulation_steps():
    with pytest.raises(ScarceError, match="grad_accum"):
        resolve_config({}, ["train.batch_size=10", "train.grad_accum=3"])
