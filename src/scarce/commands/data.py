"""`scarce data list` and `scarce data prepare`: corpora and token stores."""

from typing import Annotated

import typer
from rich.table import Table

from scarce.commands.options import console


def data_list():
    """List the named corpora."""
    from scarce.data.corpora import list_corpora

    table = Table("corpus", "description")
    for name, description in list_corpora().items():
        table.add_row(name, description)
    console.print(table)


def data_prepare(
    corpus: Annotated[str, typer.Argument(help="A catalog name (see `scarce data list`) or a path to your files.")] = "kjv",
    tokenizer: Annotated[str, typer.Option(help="bpe (trained here) or gpt2 (GPT-2's vocabulary)")] = "bpe",
    vocab_size: int = 8192,
    val_fraction: float = 0.05,
    split_seed: int = 0,
    text_field: Annotated[str, typer.Option(help="The JSON field or Parquet/Arrow column holding the text.")] = "text",
    bpe_sample_mb: Annotated[float, typer.Option(help="The BPE trains on at most this many MiB of training text.")] = 128,
    workers: Annotated[int | None, typer.Option(help="Processes that tokenize shards (default: every core).")] = None,
    executor: Annotated[str, typer.Option(help="local (a process pool), submitit (Slurm jobs) or ray (tasks on the "
                                               "cluster at RAY_ADDRESS); the last two need a shared $SCARCE_HOME")] = "local",
):
    """Tokenize a corpus once into a cached token store (train/validation split by documents).

    Resumable: run it again after an interruption and it continues with the shards not yet tokenized."""
    from scarce.config import resolve_config
    from scarce.data.store import prepare_store
    from scarce.errors import ScarceError

    if workers is not None and workers < 1:
        raise ScarceError(f"--workers must be at least 1, got {workers}")
    options = dict(tokenizer=tokenizer, vocab_size=vocab_size, val_fraction=val_fraction, split_seed=split_seed,
                   text_field=text_field, bpe_sample_bytes=round(bpe_sample_mb * 2**20))
    data = resolve_config({"data": {"corpus": corpus, **options}}).data  # a bad value is an error naming its key
    mapper = None
    if executor != "local":
        from scarce.executors import shard_mapper
        from scarce.paths import scarce_home

        mapper = shard_mapper(executor, scarce_home() / "data" / ".submitit")
    store = prepare_store(corpus, **data.store_options(), workers=workers, mapper=mapper)
    console.print(
        f"{store.path}\n  {store.train_token_count:,} training tokens, {len(store.val_tokens):,} validation tokens, "
        f"vocabulary {store.vocab_size:,}"
    )
