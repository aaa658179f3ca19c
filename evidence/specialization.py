"""Evidence at small scale: split-model specialization on three offline domains, on a CPU.

1. The (N, D, D') grid of `scarce specialize` on examples/specialize.toml's domains (KJV, the Python
   standard library, the pydoc help topics): micro and tiny models, general tokens D = 64k, 128k, 256k
   (one WSD trunk per size and decay branches), specialists of D' = 16k, 32k, 64k tokens per domain.
2. The law comparison per domain: the effective-transfer and additive forms, fit RMSE, leave-one-out and
   extrapolation (fit on the rest, predict the points of the largest D + D', of the largest D, of the
   largest N), bootstrap intervals.
3. The plan: `plan_specialization` for a budget of 6·N·T FLOPs at the tiny size (T = twice the largest
   D, beyond the grid), under each domain's chosen law; then that allocation trained: a WSD trunk of T
   tokens (the general-only plan), a decay branch at the shared plan's D, and a specialist per domain
   of the planned D'_i from each of the two general models. Predicted against measured loss.

    python evidence/specialization.py [--quick] [--runs-dir DIR] [--workers 2] [--out docs/evidence/specialization.json]

Everything runs through `scarce.executors` as resumable studies: re-running continues where it stopped
and never repeats a finished run. `--quick` is a two-minute smoke version (micro only, tiny budgets)
writing into its runs directory. Not part of the tests.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from scarce.atomic import write_json_atomic
from scarce.config import load_config
from scarce.executors import make_executor
from scarce.laws import SpecializationAdditive, SpecializationTransfer
from scarce.laws.specialization import HOLDOUTS, effective_tokens, fit_domains, fitted_laws, plan_specialization, plot_domains
from scarce.studies.specialize import Grid, run_study

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks' machine description
from machine import cpu_model  # noqa: E402

CONFIG = ROOT / "examples" / "specialize.toml"
RECIPE = ["train.log_every=20"]  # examples/specialize.toml as it is: vocab 4096, context 128, batch 16, lr 3e-3
WARMUP_TOKENS = 4096  # two steps, in the grid and the planned runs alike
FULL = dict(sizes=["micro", "tiny"], general_tokens=[65536, 131072, 262144], domain_tokens=[16384, 32768, 65536],
            plan_size="tiny")
QUICK = dict(sizes=["micro"], general_tokens=[8192, 16384, 32768], domain_tokens=[2048, 4096, 8192], plan_size="micro")
HOLDOUT_ORDER = ("tokens", "D", "N")  # the first picks each domain's law for the plan: the plan extrapolates in tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a two-minute smoke version")
    parser.add_argument("--runs-dir", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    setup = QUICK if args.quick else FULL
    runs_dir = args.runs_dir or Path("runs/evidence-specialization" + ("-quick" if args.quick else ""))
    out = args.out or (runs_dir / "evidence.json" if args.quick else Path("docs/evidence/specialization.json"))
    bootstrap = 0 if args.quick else args.bootstrap

    started = time.perf_counter()
    quick = ["data.eval_tokens=2048"] if args.quick else []  # evaluation dominates runs of a few steps
    base = load_config(CONFIG, [f"runs_dir={runs_dir}", "name=specialize-evidence", *RECIPE, *quick])
    executor = make_executor("local", workers=args.workers, threads=1)
    step_tokens = base.train.batch_size * base.model.seq_len

    # 1. the grid
    grid = Grid(sizes=setup["sizes"], general_tokens=setup["general_tokens"], domain_tokens=setup["domain_tokens"],
                warmup_tokens=WARMUP_TOKENS)
    found = run_study(base, grid, "specialize-evidence", executor)
    unique = json.loads((runs_dir / "specialize-evidence-unique-tokens.json").read_text())  # each domain's cap

    # 2. the law comparison, for three extrapolation targets
    laws = [SpecializationTransfer(), SpecializationAdditive()]
    holdouts = HOLDOUT_ORDER[:1] if args.quick else HOLDOUT_ORDER
    fits = {h: fit_domains(found, laws, bootstrap=bootstrap if h == HOLDOUT_ORDER[0] else 0, holdout=h,
                           source=f"{runs_dir}/specialize-evidence-points.csv", tokens_per_step=step_tokens,
                           unique_tokens=unique) for h in holdouts}
    document = fits[HOLDOUT_ORDER[0]]
    write_json_atomic(runs_dir / "specialize-evidence-fit.json", document)
    figure = out.with_suffix(".png")
    plot_domains(document, found, figure)

    # 3. the plan at a trainable size, and that plan trained
    params = next(p.params for p in found if p.run_id.startswith(f"specialize-evidence-{setup['plan_size']}-"))
    total_tokens = 2 * max(setup["general_tokens"])
    flops = 6 * params * total_tokens
    chosen = fitted_laws(document)
    plans = plan_specialization(chosen, flops, unique, tokens_per_step=step_tokens, params=params)
    shared = plans["shared"]
    whole = lambda tokens: max(1, round(tokens / step_tokens)) * step_tokens
    general_tokens = whole(shared["general_tokens"])
    domain_tokens = {name: whole(t) for name, t in shared["domain_tokens"].items()}
    planned = Grid(sizes=[setup["plan_size"]], general_tokens=[general_tokens, total_tokens],
                   domain_tokens={name: [t] for name, t in domain_tokens.items()}, warmup_tokens=WARMUP_TOKENS)
    trained = run_study(base, planned, "specialize-evidence-plan", executor)
    validation = _validate(chosen, trained, params, general_tokens, domain_tokens, total_tokens, unique)

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {args.workers} workers × 1 thread",
        "wall_seconds": time.perf_counter() - started,
        "quick": args.quick, "config": str(CONFIG.relative_to(ROOT)), "recipe": RECIPE,
        "grid": asdict(grid), "tokens_per_step": step_tokens, "unique_tokens": unique,
        "points": [asdict(p) for p in found],
        "comparison": {h: {d: e.get("comparison", e.get("error")) for d, e in f["domains"].items()} for h, f in fits.items()},
        "chosen_laws": {d: e.get("chosen") for d, e in document["domains"].items()},
        # each law's parameters with their bootstrap intervals (the whole fits: RUNS/specialize-evidence-fit.json)
        "fits": {d: {f["law"]["name"]: f["parameters"] for f in e.get("fits", [])} for d, e in document["domains"].items()},
        "plan": {"flops": flops, "params": params, "size": setup["plan_size"], "strategies": plans,
                 "trained": {"general_tokens": general_tokens, "domain_tokens": domain_tokens,
                             "flops": 6 * params * (general_tokens + sum(domain_tokens.values()))}},
        "validation": validation,
        "figure": figure.name,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    table = "\n".join(_table(result))
    print(table)
    out.with_suffix(".table.md").write_text(table + "\n")


def _validate(laws, trained, params, general_tokens, domain_tokens, total_tokens, unique) -> list[dict]:
    """Predicted (each domain's chosen law, at the tokens actually trained) against measured loss, for the
    shared plan's specialists, the general-only plan's general model, and the specialists of that one."""
    cap = sum(unique.values())
    rows = []
    for name, law in laws.items():
        cases = [("shared plan: specialist", general_tokens, domain_tokens[name]),
                 ("general-only plan", total_tokens, 0),
                 ("beyond the plan: specialist of the general-only model", total_tokens, domain_tokens[name])]
        for what, d, d_spec in cases:
            measured = next(p.loss for p in trained if p.domain == name and p.general_tokens == d and p.domain_tokens == d_spec)
            x = {"N": [params], "D": [effective_tokens(d, cap)], "D_spec": [effective_tokens(d_spec, unique[name])]}
            try:
                predicted = float(law.predict(x)[0])
            except Exception:  # the additive form at D' = 0
                predicted = None
            rows.append({"case": what, "domain": name, "law": law.name, "general_tokens": d, "domain_tokens": d_spec,
                         "predicted": predicted, "measured": measured,
                         "error_log": None if predicted is None else math.log(predicted / measured)})
    return rows


def _table(result: dict) -> list[str]:
    minutes = result["wall_seconds"] / 60
    lines = [f"Measured {result['date']} on {result['machine']}: {minutes:.1f} minutes wall"
             + (" (quick mode)" if result["quick"] else "") + ".", "",
             "| domain | law | points | fit RMSE | leave-one-out RMSE | "
             + " | ".join(f"extrapolation RMSE ({HOLDOUTS[h]})" for h in result["comparison"]) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in result["comparison"]) + " |"]
    first = result["comparison"][HOLDOUT_ORDER[0]]
    for domain, rows in first.items():
        if isinstance(rows, str):
            lines.append(f"| {domain} | not fitted: {rows} | | | | " + " | ".join("" for _ in result["comparison"]) + " |")
            continue
        for row in rows:
            extra = []
            for h in result["comparison"]:
                other = next((r for r in result["comparison"][h][domain] if r["law"] == row["law"]), {})
                value = other.get("extrapolation_rmse_log")
                extra.append("-" if value is None else f"{value:.4f} ({other['extrapolation_points']} pts)")
            lines.append(f"| {domain} | {row['law']} | {row['n_points']} | {row['fit_rmse_log']:.4f} | "
                         f"{row['loo_rmse_log']:.4f} | " + " | ".join(extra) + " |")
    plan = result["plan"]
    lines += ["", f"Plan for {plan['flops']:.3g} FLOPs at the {plan['size']} size ({plan['params']:,} params), "
              "each domain's law chosen by extrapolation to the largest D + D':", "",
              "| strategy | general tokens | " + " | ".join(f"D' {n}" for n in result["unique_tokens"])
              + " | FLOPs | predicted mean loss |", "| --- | --- | " + " | ".join("---" for _ in result["unique_tokens"])
              + " | --- | --- |"]
    for name, p in plan["strategies"].items():
        general = p["general_tokens"]
        general = f"{general:,.0f}" if isinstance(general, (int, float)) else ", ".join(f"{v:,.0f}" for v in general.values())
        loss = "n/a" if p["predicted_loss"] is None else f"{p['predicted_loss']['mean']:.4f}"
        lines.append(f"| {name} | {general} | " + " | ".join(f"{p['domain_tokens'][n]:,.0f}" for n in result["unique_tokens"])
                     + f" | {p['flops']:.3g} | {loss} |")
    trained = plan["trained"]
    lines += ["", f"Trained (whole steps): D = {trained['general_tokens']:,}, "
              + ", ".join(f"D' {n} = {t:,}" for n, t in trained["domain_tokens"].items())
              + f", {trained['flops']:.3g} FLOPs.", "",
              "| case | domain | law | D | D' | predicted | measured | log error |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["validation"]:
        predicted = "n/a" if row["predicted"] is None else f"{row['predicted']:.4f}"
        error = "n/a" if row["error_log"] is None else f"{row['error_log']:+.4f}"
        lines.append(f"| {row['case']} | {row['domain']} | {row['law']} | {row['general_tokens']:,} | "
                     f"{row['domain_tokens']:,} | {predicted} | {row['measured']:.4f} | {error} |")
    for case in ("shared plan: specialist", "general-only plan"):
        mine = [r for r in result["validation"] if r["case"] == case]
        if all(r["predicted"] is not None for r in mine):
            lines.append(f"\n{case}: predicted mean {sum(r['predicted'] for r in mine) / len(mine):.4f}, "
                         f"measured mean {sum(r['measured'] for r in mine) / len(mine):.4f}")
    return lines


if __name__ == "__main__":
    main()
