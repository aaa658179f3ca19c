"""The batch-source seam: every source and transform by name, in one table (no import side effects).

`data.source` names a factory of SOURCES (a domain corpus, `data.domains`, always trains on its mixture);
factory(config, store, rank, world_size) -> BatchSource (scarce.data.batch). The TRANSFORMS then wrap the
built source in order, each returning it unchanged when the config does not ask for its change. A source
in OWN_DATA brings its own data instead of a corpus: data(config) -> an object with vocab_size,
train_token_count and eval_sample(max_tokens), as TokenStore has them.

The names are checked when a config is parsed (scarce.config.SOURCE_NAMES, held equal to this table by
a test); adding a source is one line here and its name there.
"""

from collections.abc import Callable

from scarce.data.batch import BatchSource
from scarce.data.domains import mixture_source, prepare_data
from scarce.data.loader import epoch_source
from scarce.data.mixture import mix_synthetic
from scarce.data.procedural import front_load, procedural_data, procedural_stream

SOURCES: dict[str, Callable] = {"epochs": epoch_source, "procedural": procedural_stream}
OWN_DATA: dict[str, Callable] = {"procedural": procedural_data}
# procedural.mode = "mix" front-loads the task's batches; distill.kind = "sequence" mixes in the teachers' samples
TRANSFORMS: tuple[Callable, ...] = (front_load, mix_synthetic)


def prepare_run_data(config):
    """The store a run trains and evaluates on: its corpus's (scarce.data.domains.prepare_data), or the
    source's own data where the source brings it (a procedural stream: the task's vocabulary and held-out examples)."""
    if config.data.domains is None and config.data.source in OWN_DATA:
        return OWN_DATA[config.data.source](config)
    return prepare_data(config.data)


def build_source(config, store, rank: int = 0, world_size: int = 1) -> BatchSource:
    """The batch source `config.data.source` names, for this rank, with the transforms applied."""
    factory = mixture_source if config.data.domains is not None else SOURCES[config.data.source]
    source = factory(config, store, rank, world_size)
    for transform in TRANSFORMS:
        source = transform(source, config, store, rank, world_size)
    return source
