"""Evidence: does a study's law predict a run it never saw? Train the study's recommendation at the
largest compute this machine reaches in a few minutes per run and compare measured with predicted loss.

The study recommends (N, epochs) at the user's U and C; C (1e18 FLOPs) is out of reach on a CPU, so the
check asks the study's tuned law for the best allocation of the compute one run of `--minutes` buys at
the study's U, trains the nearest calibrated ladder size there (the weight decay the recommendation
names, integer epochs over a whole number of optimizer steps) with `--seeds` seeds, and writes the law's
prediction at exactly that point (its 95% bootstrap interval over the study's runs, and that interval
widened by the study's pooled seed SD, since the measurement is a seed mean) beside the measured mean.

    python evidence/study_check.py docs/studies/kjv-long2 [--minutes 25] [--seeds 2] [--workers 2]
        [--runs-dir runs/evidence-study-check] [--out docs/studies/kjv-long2/check.json] [--plan-only]
"""

import argparse
import json
import math
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.executors import make_executor
from scarce.laws import plan
from scarce.laws.derived import bootstrap_draws
from scarce.model import model_shape
from scarce.studies.study import Design, Inputs, base_config
from scarce.studies.study.design import RUN_OVERHEAD_SECONDS, step_tokens
from scarce.studies.study.extrapolation import _with_params, compare_forms, fit_laws
from scarce.studies.study.running import Row
from scarce.studies.sweep import Study, point_config


def check_point(law, inputs: Inputs, design: Design, base, minutes: float) -> dict:
    """The tuned law's best allocation of the most compute one run of `minutes` buys here, rounded to the
    nearest calibrated size, integer epochs and whole steps; the time model is the study's calibration."""
    step = step_tokens(base)
    params = {s: model_shape(s, vocab_size=base.data.vocab_size, seq_len=base.model.seq_len).non_embedding_params()
              for s in design.seconds_per_token}
    point_law = _with_params(law, law.params_)  # the fitted point only: no bootstrap plans in the search
    best = None
    for flops in np.geomspace(1e11, 1e17, 121):
        found = plan(point_law, float(flops), unique_tokens=inputs.unique_tokens)
        n = found["params"].value
        size = min(params, key=lambda s: abs(math.log(params[s] / n)))
        tokens = flops / (6 * params[size])
        epochs = max(1, round(found["epochs"].value))
        unique = min(inputs.unique_tokens, tokens / epochs) // step * step
        seconds = RUN_OVERHEAD_SECONDS + unique * epochs * design.seconds_per_token[size]
        if unique >= step and seconds <= minutes * 60:
            best = {"flops_planned": float(flops), "planned_params": n, "planned_epochs": found["epochs"].value,
                    "size": size, "params": params[size], "unique_tokens": int(unique), "epochs": epochs,
                    "predicted_seconds": seconds}
    if best is None:
        raise SystemExit(f"error: --minutes {minutes}: not even the smallest allocation fits one run")
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--minutes", type=float, default=25.0, help="the longest one run may take (one core)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/evidence-study-check"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plan-only", action="store_true", help="print the check point and its prediction; train nothing")
    args = parser.parse_args()
    console, started = Console(stderr=True), time.perf_counter()
    results = json.loads((args.study / "results.json").read_text())
    rows = [Row(**{k: v for k, v in r.items() if k in Row.__dataclass_fields__}) for r in results["rows"]]
    inputs, design = Inputs(**results["inputs"]), Design.from_dict(results["design"])
    laws, problems = fit_laws(rows, compare_forms(rows), args.bootstrap)
    if "tuned" not in laws:
        raise SystemExit(f"error: {args.study}: the tuned law could not be fitted: {problems.get('tuned')}")
    law = laws["tuned"]
    base = base_config(inputs.corpus, args.runs_dir, inputs.overrides)  # runs in RUNS_DIR/runs
    best = results["extrapolation"].get("best") or {}
    weight_decay = best.get("weight_decay", 0.1)
    point = check_point(law, inputs, design, base, args.minutes)
    x = {"N": np.array([point["params"]], float), "U": np.array([point["unique_tokens"]], float),
         "epochs": np.array([point["epochs"]], float)}
    predicted = float(law.predict(x)[0])
    draws = [float(law.predict(x, dict(zip(law.param_names, row)))[0]) for row in bootstrap_draws(law)]
    low, high = np.percentile(draws, [2.5, 97.5])
    sd = results["noise"]["sd"] or 0.0
    seed_half = 1.96 * sd / math.sqrt(args.seeds)
    console.print(f"check point: {point}; predicted {predicted:.4f} [{low:.4f}, {high:.4f}]")
    configs = [point_config(base, {"model.size": point["size"], "data.unique_tokens": point["unique_tokens"],
                                   "train.epochs": point["epochs"], "optim.weight_decay": weight_decay,
                                   "train.seed": seed, "train.data_seed": seed}, "study-check")
               for seed in range(args.seeds)]
    executor = make_executor("local", workers=args.workers, threads=1)
    if args.plan_only:
        return
    with Study("study-check", base.runs_dir, "study-check", {"point": point}) as study:
        outcomes = study.run(configs, [{"seed": s} for s in range(args.seeds)], executor, console, live=False)
    summaries = [runs.read_summary(o.run_dir) for o in outcomes]
    losses = [s["final_val_loss"] for s in summaries]
    measured = statistics.fmean(losses)
    out = {
        "what": "the study's tuned law, refitted from its results.json, predicts a run it never saw: its best "
                "allocation of the compute one run of --minutes buys at the study's U, at the nearest size",
        "study": str(args.study), "date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": platform.processor()
        or platform.machine(), "law_form": results["extrapolation"]["comparison"]["chosen"],
        "law_unidentified": list(law.unidentified_ or []), "weight_decay": weight_decay, **point,
        "predicted_loss": predicted, "predicted_interval": [float(low), float(high)],
        "predicted_interval_with_seed_noise": [float(low) - seed_half, float(high) + seed_half],
        "pooled_seed_sd": sd, "measured_losses": losses, "measured_mean": measured,
        "measured_minus_predicted": measured - predicted,
        "inside_interval_with_seed_noise": bool(low - seed_half <= measured <= high + seed_half),
        "run_ids": [s["run_id"] for s in summaries], "wall_seconds": [s.get("wall_seconds") for s in summaries],
        "seconds": time.perf_counter() - started,
        "largest_study_run": {"unique_tokens": max(r.unique_tokens for r in rows if r.loss is not None),
                              "params": max(r.params for r in rows if r.loss is not None)},
    }
    write_json_atomic(args.out or args.study / "check.json", out)
    console.print(json.dumps({k: out[k] for k in ("size", "unique_tokens", "epochs", "predicted_loss",
                                                  "predicted_interval", "measured_losses", "measured_mean")}))


if __name__ == "__main__":
    main()
