"""The `scarce` command: parse, call the library, print. Nothing here that a Python user could not call."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from scarce.data.procedural.cli import app as procedural_app
from scarce.errors import ScarceError
from scarce.evals.diagnose_cli import app as diagnose_app
from scarce.evals.harness import cli as harness_cli
from scarce.laws import cli as laws_cli
from scarce.studies import cli as studies_cli
from scarce.studies import specialize_cli
from scarce.studies import ensemble_cli
from scarce.studies.study import cli as study_cli

app = typer.Typer(
    help="Pretraining language models when unique data is the limit.", no_args_is_help=True, pretty_exceptions_enable=False,
    cls=specialize_cli.PlanSpecializeGroup,  # `scarce plan specialize` = `scarce plan-specialize`
)
data_app = typer.Typer(help="Corpora and token stores.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(procedural_app, name="procedural")
app.add_typer(diagnose_app, name="diagnose")
console = Console()

Overrides = Annotated[Optional[list[str]], typer.Argument(help="Dotted overrides, e.g. optim.weight_decay=0.8")]


@data_app.command("list")
def data_list():
    """List the named corpora."""
    from scarce.data.corpora import list_corpora

    table = Table("corpus", "description")
    for name, description in list_corpora().items():
        table.add_row(name, description)
    console.print(table)


@data_app.command("prepare")
def data_prepare(
    corpus: Annotated[str, typer.Argument(help="A catalog name (see `scarce data list`) or a path to your files.")] = "kjv",
    tokenizer: Annotated[str, typer.Option(help="bpe (trained here) or gpt2 (GPT-2's vocabulary)")] = "bpe",
    vocab_size: int = 8192,
    val_fraction: float = 0.05,
    split_seed: int = 0,
):
    """Tokenize a corpus once into a cached token store (train/validation split by documents)."""
    from scarce.config import resolve_config
    from scarce.data.store import prepare_store

    options = dict(tokenizer=tokenizer, vocab_size=vocab_size, val_fraction=val_fraction, split_seed=split_seed)
    data = resolve_config({"data": {"corpus": corpus, **options}}).data  # a bad value is an error naming its key
    store = prepare_store(corpus, **data.store_options())
    console.print(
        f"{store.path}\n  {store.train_token_count:,} training tokens, {len(store.val_tokens):,} validation tokens, "
        f"vocabulary {store.vocab_size:,}"
    )


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="TOML config (see examples/); omit for defaults")] = None,
    overrides: Overrides = None,
    resume: Annotated[Optional[Path], typer.Option(help="Run directory to continue from its newest checkpoint")] = None,
    branch_from: Annotated[Optional[str], typer.Option(
        help="RUN_DIR@STEP: a decay branch continuing that run's training state (docs/specialization.md)")] = None,
    progress: bool = True,
):
    """Train one model for E epochs over D unique tokens."""
    from scarce.config import load_config
    from scarce.train.trainer import resume as resume_run
    from scarce.train.trainer import train as train_run

    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not config.exists():  # `scarce train model.size=micro`
        config, overrides = None, [str(config), *overrides]
    if resume is not None:
        if config is not None or overrides:
            raise ScarceError("--resume continues a run with its saved config; pass no config or overrides with it")
        resume_run(resume, progress=progress)
    elif branch_from is not None:
        from scarce.train.init import branch_config

        if config is not None:
            raise ScarceError("--branch-from starts from the source run's config; pass only overrides with it")
        train_run(branch_config(branch_from, overrides), progress=progress)
    else:
        train_run(load_config(config, overrides), progress=progress)


@app.command()
def sizes(
    vocab_size: Annotated[int, typer.Option(help="Vocabulary (GPT-2's is 50258 with the mask token)")] = 8192,
    seq_len: Annotated[int, typer.Option(help="Context length, for attention FLOPs")] = 256,
):
    """The model size ladder: shape, total and non-embedding parameters, training FLOPs per token."""
    from scarce.model import SIZES, model_shape

    table = Table("size", "layers × d_model", "heads", "params", "non-embedding", "train FLOPs/token")
    for name in SIZES:
        shape = model_shape(name, vocab_size=vocab_size, seq_len=seq_len)
        table.add_row(
            name, f"{shape.n_layers} × {shape.d_model}", str(shape.n_heads), f"{shape.total_params():,}",
            f"{shape.non_embedding_params():,}", f"{shape.train_flops_per_token():.3g}",
        )
    console.print(table)


@app.command("eval")
def eval_(
    run_dirs: Annotated[list[Path], typer.Argument(help="A run directory (several with --tasks: an ensemble)")],
    eval_tokens: Annotated[Optional[int], typer.Option(help="Validation tokens to score; default all")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="lm-eval tasks, comma-separated (e.g. kjv); needs the eval extra")] = None,
    include_path: Annotated[Optional[list[Path]], typer.Option(help="A folder of your own lm-eval task YAMLs")] = None,
    limit: Annotated[Optional[float], typer.Option(help="Documents per task (a fraction if below 1)")] = None,
    num_fewshot: Optional[int] = None,
    batch_size: Optional[int] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write lm-eval's results as JSON here")] = None,
):
    """Score a run's newest checkpoint on its validation split (nats/token and bits/byte), or with --tasks on lm-eval tasks."""
    from scarce.evals.run import evaluate_run

    if tasks is not None:
        return harness_cli.eval_tasks(run_dirs, tasks, include_path or [], limit, num_fewshot, batch_size, out, console)
    if len(run_dirs) != 1:
        raise ScarceError("scoring validation loss takes one run directory; several make an ensemble only with --tasks")
    run_dir = run_dirs[0]
    result = evaluate_run(run_dir, eval_tokens)
    console.print(
        f"{run_dir}: val loss {result['val_loss']:.4f} nats/token, {result['val_bpb']:.4f} bits/byte "
        f"over {result['val_tokens']:,} tokens (checkpoint {result['checkpoint']})"
    )
    for key in (k for k in result if k.startswith("val_loss.")):  # a domain run: each domain's own held-out loss
        console.print(f"  {key.removeprefix('val_loss.')}: {result[key]:.4f} nats/token, {result['val_bpb.' + key[9:]]:.4f} bits/byte")


@app.command("runs")
def runs_(
    runs_dir: Annotated[Path, typer.Argument(help="Runs directory")] = Path("runs"),
    where: Annotated[Optional[list[str]], typer.Option(help="Filter, e.g. status=completed or epochs>=4")] = None,
    csv: Annotated[Optional[Path], typer.Option(help="Write the rows to this CSV file")] = None,
    columns: Annotated[Optional[str], typer.Option(help="Comma-separated columns to show/export")] = None,
    reindex: Annotated[bool, typer.Option(help="Rebuild the index from the run directories first")] = False,
):
    """List and filter runs; export them as CSV for `scarce fit`."""
    from scarce import runs

    if reindex:
        console.print(f"indexed {runs.RunIndex(runs_dir).reindex()} runs")
    rows = runs.load_runs_table(runs_dir, where or [])
    selected = columns.split(",") if columns else None
    if csv:
        runs.export_csv(rows, csv, selected)
        console.print(f"wrote {len(rows)} runs to {csv}")
    else:
        console.print(runs.runs_table(rows, selected, width=console.width))


@app.command()
def quickstart(
    runs_dir: Annotated[Path, typer.Option(help="Where the runs go")] = Path("runs/quickstart"),
    quick: Annotated[bool, typer.Option(help="A seconds-long smoke version of the grid")] = False,
):
    """The data-constrained regime on the King James Bible: 6 runs, about 6 minutes on a 2-core CPU."""
    from scarce.quickstart import run_quickstart

    run_quickstart(runs_dir, quick=quick, console=console)


app.command("export")(harness_cli.export)
app.command("fit")(laws_cli.fit)
app.command("laws")(laws_cli.laws)
app.command("plan")(laws_cli.plan)
app.command("efficiency")(laws_cli.efficiency)
app.command("sweep")(studies_cli.sweep)
app.command("tune")(studies_cli.tune)
app.command("specialize")(specialize_cli.specialize)
app.command("plan-specialize")(specialize_cli.plan_specialize)
app.add_typer(ensemble_cli.ensemble_app, name="ensemble")
app.command("sample")(ensemble_cli.sample)
app.command("distill")(ensemble_cli.distill)
app.command("study")(study_cli.study)


def main():
    """Console entry point: a ScarceError is one red line and exit code 2, not a traceback."""
    try:
        app()
    except ScarceError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False)
        raise SystemExit(2)


if __name__ == "__main__":  # `torchrun --nproc_per_node 2 -m scarce.cli train ...`
    main()
