"""`scarce ensemble train|eval`, `scarce sample` and `scarce distill`: parse, call the library, print."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from scarce.commands.options import (
    PLOT_SUFFIXES,
    ConfigArg,
    ExecutorOptions,
    Overrides,
    check_output_file,
    console,
    executor_options,
    load_run_config,
)
from scarce.errors import ScarceError
from scarce.laws.io import write_json


def ensemble_train(
    config: ConfigArg = None,
    overrides: Overrides = None,
    k: Annotated[int, typer.Option("-k", "--members", help="Number of members K")] = 4,
    vary: Annotated[str, typer.Option(
        help="Seeds that differ between members: seed (init), data_seed (data order), or both")] = "seed,data_seed",
    member_heuristic: Annotated[bool, typer.Option(help="Members get 2× epochs (≤ 128) and ½ weight decay (≥ 0.1)")] = False,
    study: Annotated[Optional[str], typer.Option(help="Study name recorded in every member's config (default NAME-ensemble)")] = None,
    executor: Annotated[str, typer.Option(
        help="auto (fastest measured), batched (vmap, one process), local (a process pool), serial, submitit or ray")] = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Runs at once (local: default one per CPU core, or per GPU)")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per run (local on CPU: default 1)")] = None,
    executor_option: ExecutorOptions = None,
    progress: bool = True,
):
    """Train K members of an ensemble: the same config, different seeds. Resumable: finished members are reused."""
    from scarce.studies.ensemble import member_configs, member_executor, train_members

    varied = tuple(v.strip() for v in vary.split(",") if v.strip())
    configs = member_configs(load_run_config(config, overrides), k, varied, member_heuristic, study)
    chosen = member_executor(executor, configs, workers, threads, progress, **executor_options(executor_option))
    run_dirs = train_members(configs, chosen, progress=progress, console=console)
    console.print(f"{len(run_dirs)} members of study {configs[0].study}:")
    for run_dir in run_dirs:
        console.print(f"  {run_dir}")
    console.print(f"score them with: scarce ensemble eval {' '.join(str(r) for r in run_dirs)}")


def ensemble_eval(
    run_dirs: Annotated[list[Path], typer.Argument(help="The members' run directories")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the result as JSON here")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Plot loss against K with the fitted law (PNG)")] = None,
    combine: Annotated[str, typer.Option(help="logits (average logits, the default) or probs (average probabilities)")] = "logits",
    eval_tokens: Annotated[Optional[int], typer.Option(help="Validation tokens (default: the members' data.eval_tokens)")] = None,
    max_subsets: Annotated[int, typer.Option(help="Sub-ensembles averaged per size k (all when fewer; else a seeded sample)")] = 16,
):
    """Score an ensemble by logit averaging on the members' validation sample; fit L(K) = E + A/K^alpha."""
    from scarce.evals.ensemble import evaluate_ensemble
    from scarce.evals.ensemble_law import plot_ensemble

    if max_subsets < 1:
        raise ScarceError(f"--max-subsets must be at least 1, got {max_subsets}")
    if eval_tokens is not None and eval_tokens < 1:
        raise ScarceError(f"--eval-tokens must be at least 1, got {eval_tokens}")
    check_output_file(json_out, "--json")
    check_output_file(plot, "--plot", PLOT_SUFFIXES)
    result = evaluate_ensemble(run_dirs, combine, eval_tokens, max_subsets)
    table = Table("K", "loss (nats/token)", "sub-ensembles")
    for point in result["losses_by_k"]:
        table.add_row(str(point["k"]), f"{point['loss']:.4f}", str(point["subsets"]))
    console.print(table)
    law = result["law"]
    if law["fitted"]:
        p = {name: v["value"] for name, v in law["parameters"].items()}
        console.print(f"L(K) = {p['E']:.4f} + {p['A']:.4f} / K^{p['alpha']:.3f}")
        for name, entry in [*law["parameters"].items(), ("asymptote", law["derived"]["asymptote"])]:
            interval = entry["interval"]
            console.print(f"  {name} = {entry['value']:.4g}" + (f"  [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else
                                                                "  (no interval)"), highlight=False)
        if not law["identified"]:
            console.print(f"[yellow]warning:[/yellow] the K-law is not identified: {law['reason']}", highlight=False)
    else:
        console.print(f"K-law not fitted: {law['reason']}")
    if json_out:
        write_json(result, json_out)
        console.print(f"wrote {json_out}")
    if plot:
        console.print(f"wrote {plot_ensemble(result, plot)}")


def sample(
    run_dirs: Annotated[list[Path], typer.Argument(help="A run directory, or several: an ensemble (logits averaged every step)")],
    tokens: Annotated[int, typer.Option("--tokens", help="Sample at least this many tokens (whole documents)")],
    out: Annotated[Path, typer.Option(help="JSONL file: one document per line")],
    temperature: Annotated[float, typer.Option(help="Softmax temperature; 0 is greedy")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample among the K most likely tokens")] = None,
    batch_size: Annotated[int, typer.Option(help="Documents sampled at once")] = 64,
    seed: int = 0,
    progress: bool = True,
):
    """Sample documents (each from end-of-text to end-of-text, or the context length) with a KV cache."""
    import torch

    from scarce.atomic import write_bytes_atomic
    from scarce.evals.ensemble import load_members
    from scarce.train.sample import check_sampling, sample_documents

    check_sampling(temperature, top_k, batch_size, tokens)
    check_output_file(out, "--out")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    members, store = load_members(run_dirs, device)
    stats: dict = {}
    lines = []
    for doc in sample_documents(
        [m.model for m in members], tokens, store.eot_id, temperature=temperature, top_k=top_k, batch_size=batch_size,
        seed=seed, progress=progress, stats=stats,
    ):
        record = {"text": store.tokenizer.decode(doc.tokens), "tokens": doc.tokens, "end": doc.end}
        lines.append(json.dumps(record, ensure_ascii=False))
    write_bytes_atomic(out, ("\n".join(lines) + "\n").encode())
    console.print(
        f"wrote {len(lines)} documents, {stats['tokens']:,} tokens to {out} "
        f"({stats['tokens'] / stats['seconds']:,.0f} tokens/s on {device.type}, batch {batch_size})"
    )


def distill(
    config: ConfigArg = None,
    overrides: Overrides = None,
    teacher: Annotated[list[Path], typer.Option(help="A teacher run directory; repeat for an ensemble")] = [],  # noqa: B006
    mode: Annotated[str, typer.Option(
        help="sequence (train on teacher samples mixed with real data) or token (KL on real text)")] = "sequence",
    weight: Annotated[Optional[float], typer.Option(
        help="sequence: synthetic fraction w (default 0.9, self 0.75); token: KL weight (0.5)")] = None,
    synthetic: Annotated[Optional[Path], typer.Option(help="Reuse this synthetic token file instead of sampling")] = None,
    synthetic_tokens: Annotated[Optional[int], typer.Option(
        help="Tokens the teachers sample (default: w·E·D / ((1 − w)·3), so the student passes over them at most "
             "3 times; a warning above 4)")] = None,
    sample_batch_size: int = 64,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    single_loss: Annotated[Optional[float], typer.Option(help="L_single for the retained fraction (default: the teachers' mean)")] = None,
    ensemble_loss: Annotated[Optional[float], typer.Option(help="L_ensemble (default: the teachers' logit-averaged loss)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON here")] = None,
    progress: bool = True,
):
    """Distill teachers (an ensemble or one model) into a student trained from scratch."""
    from scarce.studies.distill import run_distillation

    if synthetic_tokens is not None and synthetic_tokens < 1:  # 0 is not "the default"
        raise ScarceError(f"--synthetic-tokens must be at least 1, got {synthetic_tokens}")
    if sample_batch_size < 1:
        raise ScarceError(f"--sample-batch-size must be at least 1, got {sample_batch_size}")
    check_output_file(json_out, "--json")
    report = run_distillation(
        load_run_config(config, overrides), teacher, mode, weight, synthetic, synthetic_tokens, sample_batch_size, seed, progress,
        console, single_loss, ensemble_loss,
    )
    fraction = report["retained_fraction"]
    console.print(
        f"student {report['student']}: loss {report['loss_student']:.4f}; single {report['loss_single']:.4f}, "
        f"ensemble {report['loss_ensemble']:.4f}; retained fraction "
        + (f"{fraction:.3f}" if fraction is not None else f"n/a ({report['retained_fraction_note']})")
    )
    if json_out:
        write_json(report, json_out)
        console.print(f"wrote {json_out}")
