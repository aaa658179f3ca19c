"""The study's report: DIR/report.md and DIR/report.html (one file, figures embedded as base64 PNG, opens
offline), both rendered from one list of blocks, and the figures in DIR/figures/.

Every number comes from `results.json` (scarce.studies.study.conclude), which comes from the runs in
DIR/runs; every table and figure names the runs behind it.
"""

from __future__ import annotations

import base64
import html
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scarce.atomic import write_bytes_atomic
from scarce.report import plt, save_figure
from scarce.runs_jsonl import RUNS_JSONL_FILE
from scarce.studies.study.estimates import NOT_DISTINGUISHABLE, format_multiplier, verdict_of
from scarce.studies.study.interventions import STANDARD_WEIGHT_DECAY

FIGURES_DIR = "figures"


# ---------------------------------------------------------------- formatting


def _num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _sci(v) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.3g}"


def _est(e: dict | None, fmt=_sci) -> str:
    """"value [low, high]" of an estimate dict; an open end (infinite) is ∞."""
    if not e or e.get("value") is None:
        return "–"
    if not e.get("interval"):
        return fmt(e["value"])
    low, high = (fmt(v) if v is not None else "∞" for v in e["interval"])
    return f"{fmt(e['value'])} [{low}, {high}]"


def _signed(v) -> str:
    return "–" if v is None else f"{v:+.4f}"


def _runs(ids: Sequence[str], limit: int = 6) -> str:
    ids = list(ids)
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more (see Runs)" if len(ids) > limit else "")


# ---------------------------------------------------------------- blocks → markdown / html


PROSE_COLUMNS = 100  # report.md's prose lines (tables are as wide as their cells)


def _wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(text, PROSE_COLUMNS, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def _md(blocks: list[tuple]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind == "h":
            out.append("#" * rest[0] + " " + rest[1])
        elif kind == "p":
            out.append(_wrap(f"**{rest[0]}**" if len(rest) > 1 and rest[1] else rest[0]))
        elif kind == "list":
            out.append("\n".join(_wrap(f"- {item}", "  ") for item in rest[0]))
        elif kind == "table":
            headers, rows = rest
            cell = lambda v: str(v).replace("|", "\\|")
            out.append("\n".join(["| " + " | ".join(map(cell, headers)) + " |", "|" + " --- |" * len(headers),
                                  *("| " + " | ".join(map(cell, row)) + " |" for row in rows)]))
        elif kind == "fig":
            path, caption = rest
            out.append(f"![{caption.split('.')[0]}]({FIGURES_DIR}/{path.name})\n\n" + _wrap(f"*{caption}*"))
    return "\n\n".join(out) + "\n"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}img{max-width:100%}figcaption{font-size:.9em;color:#555}p.lead{font-size:1.1em;font-weight:600}"""


def _html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{STYLE}</style></head><body>"]
    for kind, *rest in blocks:
        if kind == "h":
            out.append(f"<h{rest[0]}>{e(rest[1])}</h{rest[0]}>")
        elif kind == "p":
            out.append(f"<p class='lead'>{e(rest[0])}</p>" if len(rest) > 1 and rest[1] else f"<p>{e(rest[0])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in rest[0]) + "</ul>")
        elif kind == "table":
            headers, rows = rest
            out.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in rows)
                       + "</table>")
        elif kind == "fig":
            path, caption = rest
            data = base64.b64encode(Path(path).read_bytes()).decode()
            out.append(f"<figure><img alt='{e(caption.split('.')[0])}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{e(caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------- figures


def plot_epochs(results: dict, path: Path) -> tuple[Path, list[str]]:
    """Final validation loss against epochs, one panel per model size, one colour per budget: the standard
    recipe (weight decay 0.1) dashed, the best weight decay at each point solid."""
    rows = [r for r in results["rows"] if r["part"] == "grid" and r["loss"] is not None]
    sizes = results["design"]["sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.8 * len(sizes), 4), squeeze=False, sharey=True)
    budgets = results["design"]["budgets"]
    for ax, size in zip(axes[0], sizes):
        for i, d in enumerate(budgets):
            cell = [r for r in rows if r["size"] == size and r["budget"] == d]
            if not cell:
                continue
            epochs = sorted({r["epochs"] for r in cell})
            std = [min((r["loss"] for r in cell if r["epochs"] == e and r["weight_decay"] == STANDARD_WEIGHT_DECAY),
                       default=np.nan) for e in epochs]
            best = [min(r["loss"] for r in cell if r["epochs"] == e) for e in epochs]
            ax.plot(epochs, best, "o-", color=f"C{i}", label=f"U = {d:,}: best weight decay")
            ax.plot(epochs, std, "s--", color=f"C{i}", alpha=0.7, label=f"U = {d:,}: weight decay 0.1")
        ax.set_xscale("log", base=2)
        ax.set_title(size)
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final validation loss (nats/token)")
    axes[0][-1].legend(fontsize=7)
    return save_figure(fig, path), [r["run_id"] for r in rows]


def plot_laws(results: dict, path: Path) -> tuple[Path, list[str]] | None:
    """Left: the tuned recipe's points and its fitted law against epochs, past the largest measured epochs.
    Right: each recipe's predicted loss at the user's U against compute, with the user's C marked."""
    from scarce.laws import DataConstrained, plan
    from scarce.studies.study.extrapolation import _with_params

    laws = results["extrapolation"]["laws"]
    if not laws:
        return None
    recipe = "tuned" if "tuned" in laws else next(iter(laws))
    fitted = laws[recipe]
    params = {k: v["value"] for k, v in fitted["parameters"].items()}
    law = _with_params(DataConstrained(), params)
    by_id = {r["run_id"]: r for r in results["rows"]}
    points = [by_id[i] for i in fitted["runs"]]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    groups = sorted({(p["params"], p["unique_tokens"]) for p in points})
    span = np.geomspace(1, max(p["epochs"] for p in points) * 8, 100)
    for i, (n, u) in enumerate(groups):
        mine = [p for p in points if (p["params"], p["unique_tokens"]) == (n, u)]
        color = plt.get_cmap("viridis")(i / max(1, len(groups) - 1) * 0.9)
        ax.scatter([p["epochs"] for p in mine], [p["loss"] for p in mine], color=color, s=18,
                   label=f"N={n:.3g}, U={u:,}")
        ax.plot(span, law.predict({"N": np.full_like(span, n), "U": np.full_like(span, u), "epochs": span}),
                color=color, lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epochs")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title(f"{recipe} recipe: {fitted['form']}", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    inputs = results["inputs"]
    flops = np.geomspace(inputs["flops"] / 1e4, inputs["flops"] * 10, 20)
    for j, r in enumerate(results["extrapolation"]["recipes"]):
        base = laws.get(r["law"])
        if base is None:
            continue
        law_r = _with_params(DataConstrained(), {k: v["value"] for k, v in base["parameters"].items()})
        losses = []
        for c in flops:
            try:
                losses.append(plan(law_r, c / r["cost"], unique_tokens=inputs["unique_tokens"] * r["k"])["loss"].value)
            except Exception:  # noqa: BLE001 - a degenerate fit has no plan at some budgets: leave a gap
                losses.append(np.nan)
        ax2.plot(flops, losses, color=f"C{j}", ls="-" if r["eligible"] else ":",
                 label=r["recipe"] + ("" if r["eligible"] else " (not distinguishable)"))
        if r["loss"]["value"] is not None and r["loss"]["interval"] and None not in r["loss"]["interval"]:
            lo, hi = r["loss"]["interval"]
            ax2.errorbar([inputs["flops"]], [r["loss"]["value"]], yerr=[[r["loss"]["value"] - lo], [hi - r["loss"]["value"]]],
                         color=f"C{j}", fmt="o", capsize=3)
    ax2.axvline(inputs["flops"], color="grey", ls="--", lw=1)
    ax2.set_xscale("log")
    ax2.set_xlabel(f"training FLOPs (U = {inputs['unique_tokens']:,} unique tokens)")
    ax2.set_ylabel("predicted loss at the best (N, epochs)")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    return save_figure(fig, path), [i for law_ in laws.values() for i in law_["runs"]]


def plot_multipliers(results: dict, path: Path) -> tuple[Path, list[str]] | None:
    """Each intervention's effective-data multiplier k with its 95% interval; 1× = no effect. An end past
    the solver's bound is drawn to the bound with an arrow (unbounded), never as a measured end."""
    effects = [e for e in results["effects"] if e["multiplier"]]
    if not effects:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(effects) + 2))
    colors = {"gain": "C2", "loss": "C3"}
    for i, e in enumerate(effects):
        k = e["multiplier"]
        bound = k.get("bound", 100.0)
        value = k["value"] if k["value"] is not None else k["capped"]
        lo, hi = k["interval"] or (value, value)
        lo, hi = lo if lo is not None else 1 / bound, hi if hi is not None else bound
        color = colors.get(e["verdict"], "grey")
        ax.errorbar([value], [i], xerr=[[max(value - lo, 0)], [max(hi - value, 0)]], fmt="o", color=color, capsize=4)
        for end, side, marker in ((lo, 1, "<"), (hi, 2, ">")):
            if k["interval"] and k["interval"][side - 1] is None:
                ax.plot([end], [i], marker=marker, color=color, ms=8)
    ax.axvline(1, color="black", lw=1)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=label) for label, c in
               (("gain", "C2"), ("loss", "C3"), (NOT_DISTINGUISHABLE, "grey"))]
    handles += [plt.Line2D([], [], color="black", marker=">", ls="", label="interval unbounded (past the solver's bound)"),
                plt.Line2D([], [], color="black", lw=1, label="1× = no effect")]
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    ax.set_yticks(range(len(effects)), [e["name"] for e in effects], fontsize=9)
    ax.set_xscale("log")
    ticks = [0.01, 0.1, 0.5, 1, 2, 10, 100]
    ax.set_xticks(ticks, [f"{t:g}×" for t in ticks])
    ax.set_xlim(0.008, 125)
    ax.minorticks_off()
    ax.set_xlabel("effective-data multiplier k [95% interval]")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return save_figure(fig, path), [i for e in effects for i in e["runs"]]


# ---------------------------------------------------------------- the report


EXTRAPOLATION_WARNING = 10.0  # predictions beyond this factor of the measured scale are flagged in the first lines
HEADLINE_CHARACTERS = 200
FLOPS_CONVENTION = ("FLOPs throughout are C = 6·N·D with N the non-embedding parameters and D the training "
                    "tokens (the convention of --flops, the laws and the planner; the runs' own counts, which add "
                    "the output head and attention, are rescaled to it).")


def headline(results: dict) -> str:
    """The answer in at most HEADLINE_CHARACTERS characters: what to train, or why nothing can be said and
    the --budget-hours that would change that on this machine."""
    best, design = results["extrapolation"].get("best"), results["design"]
    problems = results["extrapolation"]["problems"]
    if best is not None:
        text = (f"Train {best['params']['value']:.3g} non-embedding parameters (≈ {best['nearest_size']}) for "
                f"{best['epochs']['value']:.3g} epochs, {best['recipe']} recipe: predicted loss "
                f"{_num(best['loss']['value'], 3)} nats/token.")
    elif design.get("hours_to_identify_n"):
        text = (f"No model size: a {design['hours']:g} h budget cannot run the sizes that identify N on this machine; "
                f"--budget-hours {design['hours_to_identify_n']:g} would.")
    elif "recommendation" in problems and design.get("hours_for_4x_budget"):
        text = (f"No model size: the runs did not separate the model-size term from the data term; 4× the budgets, "
                f"--budget-hours {design['hours_for_4x_budget']:g} on this machine, may.")
    elif "recommendation" in problems:
        text = ("No model size: the runs did not separate the model-size term from the data term (a design from "
                "before the budget that identifies N was recorded; see below).")
    else:
        text = "No recommendation: the runs do not support a fitted law (see 'What this study could not conclude')."
    return text[:HEADLINE_CHARACTERS]


def effects_line(results: dict) -> str:
    found = {v: [f"{e['name']} ({format_multiplier(e['multiplier'])})" if e["multiplier"] else e["name"]
                 for e in results["effects"] if e["verdict"] == v] for v in ("gain", "loss")}
    if not found["gain"] and not found["loss"]:
        return "No intervention's effect was distinguishable from zero at this scale."
    return "; ".join(f"Distinguishable {what} at this scale: {', '.join(names)}" for what, names in
                     (("gains", found["gain"]), ("losses", found["loss"])) if names) + "."


def recommendation(results: dict) -> list[tuple]:
    inputs = results["inputs"]
    best = results["extrapolation"].get("best")
    gains = [e["name"] for e in results["effects"] if e["verdict"] == "gain"]
    blocks = [("p", headline(results), True), ("p", effects_line(results))]
    s = results.get("scale")
    if s:
        factors = {"compute": s["flops_factor"], "unique tokens": s["unique_tokens_factor"]}
        if best is not None:
            factors["parameters"] = best["params_factor"]
        far = {k: v for k, v in factors.items() if v > EXTRAPOLATION_WARNING}
        if far and best is not None:
            blocks.append(("p", "Warning: the recommendation extrapolates " + ", ".join(
                f"{v:.3g}× in {k}" for k, v in far.items()) + f" beyond the measured runs (more than "
                f"{EXTRAPOLATION_WARNING:g}×); the law's form, not these runs, decides it there.", True))
    calibration = results.get("calibration")
    if calibration:
        k = (f"k = {format_multiplier(calibration['multiplier'])}" if calibration["multiplier"]
             else "no k (no law in U could be fitted)")
        blocks.append(("p", f"Calibration: a placebo (at each tuned setting one seed treated as an intervention, the "
                            f"others as its reference) gets {k}, Δ {calibration['test']['difference']:+.4f}, "
                            f"t = {calibration['test']['t']:+.2f}: {verdict_of(calibration['test'])}; a correct estimator "
                            f"gives 1× and not distinguishable."))
    else:
        blocks.append(("p", "Calibration: none (fewer than two finished seeds of a tuned setting, so no placebo "
                            "and no noise estimate: no effect below can be judged)."))
    if best is None:
        problems = results["extrapolation"]["problems"]
        if "recommendation" in problems:
            reason = problems["recommendation"]
        elif problems:
            reason = "the runs could not support a fitted law to extrapolate from (" + "; ".join(
                f"{k}: {v}" for k, v in problems.items()) + ")"
        else:
            reason = "no eligible recipe had a prediction"
        blocks.append(("p", f"No recommendation: {reason}. The measured effects below hold only at the scale "
                            f"measured."))
    else:
        n = best["params"]
        wd = f", weight decay {best['weight_decay']:g}" if best["weight_decay"] is not None else ""
        blocks.append(("p", f"Recommendation for {inputs['unique_tokens']:,} unique tokens of {inputs['corpus']} and "
                            f"{inputs['flops']:.3g} FLOPs: the {best['recipe']} recipe{wd}, a model of "
                            f"{_est(n)} non-embedding parameters (nearest ladder size: {best['nearest_size']}), "
                            f"{_est(best['epochs'])} epochs ({_est(best['tokens'])} training tokens); predicted "
                            f"validation loss {_est(best['loss'], _num)} nats/token."))
        eff = best["data_efficiency"]
        text = (f"As compute → ∞ on these {inputs['unique_tokens']:,} tokens the {best['recipe']} recipe approaches "
                f"{_est(best['asymptote'], _num)} nats/token")
        if best["recipe"] == "standard" and gains:
            text += (f"; the distinguishable gains ({', '.join(gains)}) are predicted through the tuned recipe's law, "
                     f"which at this C predicts a higher loss than the standard recipe's own law, so the best recipe "
                     f"is the standard one (1× its data): the two laws disagree, see 'Fitted laws'.")
        elif best["recipe"] == "standard":
            text += "; no intervention was a distinguishable gain, so the best recipe is the standard one (1× its data)."
        elif eff:
            text += (f"; the standard recipe would need {_est(eff)}× these unique tokens to reach that (data "
                     f"efficiency vs the standard recipe).")
        blocks.append(("p", text if text.endswith(".") else text + "."))
    if s:
        reach = (f"the recommendation extrapolates {best['params_factor']:.3g}× in parameters, "
                 if best is not None else "your budget lies ")
        blocks.append(("p", f"Scale: measured at {s['params_measured'][0]:,}–{s['params_measured'][1]:,} non-embedding "
                            f"parameters and {s['unique_tokens_measured'][0]:,}–{s['unique_tokens_measured'][1]:,} unique "
                            f"tokens, runs of up to {s['flops_largest_run']:.3g} FLOPs; {reach}"
                            f"{s['unique_tokens_factor']:.3g}× in unique tokens and {s['flops_factor']:.3g}× in compute "
                            f"beyond that. Prediction intervals are 95% bootstrap intervals over the runs; they do not "
                            f"cover the error of the law's form, which grows with extrapolation. {FLOPS_CONVENTION}"))
    if results["failed"]:
        blocks.append(("p", f"{len(results['failed'])} of the study's runs failed or diverged (listed under 'What this "
                            f"study could not conclude'); re-run the command to retry them.", True))
    return blocks


def effect_blocks(results: dict) -> list[tuple]:
    noise = results.get("noise") or {}
    blocks = [("h", 2, "What each intervention is worth here"),
              ("p", "Loss changes are in nats/token (negative = lower loss). Δ same setting: the intervention's loss "
                    "minus the mean of the reference's fresh seeds at the same model, budget and epochs, averaged "
                    "over its points, ± its standard error from the pooled seed SD "
                    f"({_num(noise.get('sd'))} nats, {noise.get('df', 0)} df). One two-sided t-test at 95% calls "
                    "it a gain, a loss or "
                    f"{NOT_DISTINGUISHABLE}. k: the unique data the reference would need for that loss change, "
                    "read off the reference law's slope at the intervention's own points (docs/study.md). Matched "
                    "compute: against the reference's best run that used no more FLOPs.")]
    rows = []
    for e in results["effects"]:
        test = e.get("test")
        rows.append([e["name"], e["verdict"], _signed(e["delta_compute"]),
                     f"{_signed(e['delta_data'])} ± {test['se']:.4f}" if test else _signed(e["delta_data"]),
                     f"{test['t']:+.2f}" if test else "–", format_multiplier(e["multiplier"]),
                     e.get("published") or "–", _sci(e["cost"]) if e["cost"] else "–", len(e["runs"])])
    blocks.append(("table", ["intervention", "verdict", "Δ loss, matched compute", "Δ loss, same setting ± SE", "t",
                             "multiplier k [95%]", "published", "FLOPs ×", "runs"], rows))
    for e in results["effects"]:
        blocks.append(("h", 3, f"{e['name']}: {e['title']}"))
        if e["status"] != "measured":
            blocks.append(("p", f"{e['status'].capitalize()}: {e['reason']}"))
            continue
        compared = "the standard recipe (weight decay 0.1, epochs tuned)" if e["reference"] == "standard" else \
            "the tuned recipe (best weight decay and epochs of the grid)"
        k = e["multiplier"]
        k_text = (f"Effective-data multiplier {format_multiplier(k)} ({k['law']})" if k
                  else f"No multiplier: {e['multiplier_reason']}")
        published = f" Published: {e['published']}." if e.get("published") else ""
        blocks.append(("p", f"Compared with {compared}. Verdict: {e['verdict']} — {e['verdict_reason']}. {k_text}."
                            f"{published} {len(e['runs'])} runs."))
        blocks.append(("table", ["size", "budget U", "epochs", "loss", "FLOPs", "matched-compute loss (run)",
                                 "reference seeds' mean (runs)", "runs"],
                       [[p["size"], f"{p['budget']:,}", f"{p['epochs']:g}", _num(p["loss"]), _sci(p["flops"]),
                         f"{_num(p['matched_compute_loss'])} ({p['matched_compute_run'] or '–'})",
                         f"{_num(p['same_setting_loss'])} ({_runs(p.get('reference_runs') or [], 4)})",
                         _runs(p["runs"], 3)]
                        for p in e["points"]]))
    return blocks


def law_blocks(results: dict) -> list[tuple]:
    ext = results["extrapolation"]
    comparison = ext["comparison"]
    blocks = [("h", 2, "Fitted laws")]
    if comparison["table"]:
        blocks.append(("p", f"Each candidate form fitted to the standard recipe's runs (weight decay 0.1) and to the "
                            f"tuned recipe's (the best weight decay at each model size, budget and epochs); errors are "
                            f"RMSE of log loss. Chosen by {comparison['score']}: {comparison['chosen']}."))
        blocks.append(("table", ["recipe", "form", "points", "fit", "leave-one-out", "extrapolation (points)", "unidentified"],
                       [[t["recipe"], t["law"], t["n_points"], _num(t["fit_rmse_log"]), _num(t["loo_rmse_log"]),
                         f"{_num(t['extrapolation_rmse_log'])} ({t['extrapolation_points']})",
                         ", ".join(t["unidentified"]) or "–"] for t in comparison["table"]]))
    for recipe, law in ext["laws"].items():
        blocks.append(("p", f"{recipe} recipe, {law['form']}: {law['formula']} — fitted to {law['n_points']} points "
                            f"(runs {_runs(law['runs'])}); RMSE(log loss) {law['rmse_log']:.4f}"
                            + (f"; not determined by these runs: {', '.join(law['unidentified'])}" if law["unidentified"] else "")))
        blocks.append(("table", ["parameter", "value [95%]"],
                       [[name, _est(p)] for name, p in law["parameters"].items()]))
    if ext["recipes"]:
        inputs = results["inputs"]
        blocks.append(("h", 2, f"Predictions at U = {inputs['unique_tokens']:,} unique tokens and C = {inputs['flops']:.3g} FLOPs"))
        blocks.append(("p", "Each recipe's best model size and epochs under its law (interventions: the tuned law with U "
                            "scaled by their multiplier k and the compute divided by their FLOPs cost). Only the standard "
                            "recipe and distinguishable gains are eligible for the recommendation."))
        if "recommendation" in ext["problems"]:
            blocks.append(("p", f"Not conclusions: {ext['problems']['recommendation']}."))
        blocks.append(("table", ["recipe", "eligible", "k", "FLOPs ×", "N (non-embedding)", "epochs", "loss [95%]",
                                 "loss as compute → ∞ [95%]", "data efficiency vs standard [95%]"],
                       [[r["recipe"], "yes" if r["eligible"] else "no", _sci(r["k"]), _sci(r["cost"]), _est(r["params"]),
                         _est(r["epochs"]), _est(r["loss"], _num), _est(r["asymptote"], _num), _est(r["data_efficiency"])]
                        for r in ext["recipes"]]))
    return blocks


def limits(results: dict) -> list[str]:
    items = []
    for e in results["effects"]:
        if e["status"] == "skipped":
            items.append(f"{e['name']}: not measured — {e['reason']}.")
        elif e["status"] == "failed":
            items.append(f"{e['name']}: no result — {e['reason']}.")
        elif e["verdict"] not in ("gain", "loss"):
            items.append(f"{e['name']}: {e['verdict']} ({e['verdict_reason']}).")
    for what, problem in results["extrapolation"]["problems"].items():
        items.append(f"the {what} recipe's law: not fitted — {problem}" if what in ("standard", "tuned") else problem)
    for recipe, law in results["extrapolation"]["laws"].items():
        if law["unidentified"]:
            items.append(f"the {recipe} law's {', '.join(law['unidentified'])} are not determined by these runs "
                         f"(e.g. one model size leaves the N term free): predictions that depend on them are guesses.")
    for cell, why in results.get("dropped_cells", {}).items():
        items.append(f"the grid's {cell}: not run — {why}.")
    if results["failed"]:
        items.append(f"{len(results['failed'])} run(s) failed or diverged: {_runs(results['failed'])}; re-run the "
                     f"command to retry them.")
    design = results["design"]
    if design["predicted_seconds"] > design["hours"] * 3600:
        items.append(f"even the smallest design was predicted to take {design['predicted_seconds'] / 60:.1f} min, more "
                     f"than the {design['hours']:g} h budget; it ran anyway at its smallest budget.")
    if len(results["design"]["sizes"]) < 2:
        items.append("one model size was measured: the best model size cannot be extrapolated from this study.")
    items.append("learning rate, batch size and context were fixed (not tuned); effects were measured at the "
                 "smallest model size only, and are assumed to hold at the recommended size.")
    return items


def runs_table(results: dict) -> tuple:
    return ("table", ["run", "part", "size", "N", "budget", "U", "epochs", "weight decay", "seed", "loss", "FLOPs",
                      "seconds", "status"],
            [[r["run_id"], r["part"], r["size"], f"{r['params']:,}", f"{r['budget']:,}", f"{r['unique_tokens']:,}",
              f"{r['epochs']:g}", f"{r['weight_decay']:g}", r["seed"], _num(r["loss"]), _sci(r["flops"]),
              f"{r['wall_seconds']:.1f}", r["status"]] for r in results["rows"]])


def write_report(results: dict, out: Path) -> tuple[Path, Path]:
    """Figures, then report.md and report.html in `out`."""
    out = Path(out)
    figures = out / FIGURES_DIR
    figures.mkdir(parents=True, exist_ok=True)
    inputs, design = results["inputs"], results["design"]
    title = f"What {inputs['corpus']} is worth: scarce study"
    blocks: list[tuple] = [("h", 1, title), *recommendation(results)]
    blocks += effect_blocks(results)
    blocks += law_blocks(results)
    blocks.append(("h", 2, "Figures"))
    drawn = [plot_epochs(results, figures / "loss-vs-epochs.png"), plot_laws(results, figures / "laws.png"),
             plot_multipliers(results, figures / "multipliers.png")]
    captions = [
        "Loss against epochs per budget. Final validation loss of the grid runs, one panel per model size; solid: "
        "the best weight decay at each point, dashed: weight decay 0.1.",
        "Law fits with extrapolation. Left: the tuned recipe's points and fitted law, drawn past the measured epochs. "
        "Right: each recipe's predicted loss at the user's U against compute (dotted: not distinguishable), the "
        "user's C dashed, with the 95% interval there.",
        "Intervention multipliers. Effective-data multiplier k with its 95% interval (green: gain, red: loss, "
        "grey: not distinguishable from zero; an arrow: unbounded past the solver's bound).",
    ]
    if "recommendation" in results["extrapolation"]["problems"]:
        captions[1] += " Not conclusions: the runs do not determine the law's model-size term (see Predictions)."
    for found, caption in zip(drawn, captions):
        if found is not None:
            path, ids = found
            blocks.append(("fig", path, f"{caption} Runs: {_runs(sorted(set(ids)), 8)}."))
    blocks.append(("h", 2, "What this study could not conclude"))
    blocks.append(("list", limits(results)))
    wall = results.get("wall_seconds", {})
    blocks.append(("h", 2, "Design and time"))
    blocks.append(("p", f"Design '{design['level']}': sizes {', '.join(design['sizes'])}; nested budgets "
                        f"{', '.join(f'{d:,}' for d in design['budgets'])} unique tokens; epochs {design['epochs']}; "
                        f"weight decays {design['weight_decays']}; {design['members']} seeds at each tuned setting "
                        f"(the ensemble members). Budget {design['hours']:g} h; predicted {design['predicted_seconds'] / 60:.1f} "
                        f"min of runs on {design['workers']} worker(s) (calibrated at "
                        f"{1 / design['seconds_per_token'][design['sizes'][0]]:,.0f} training tokens/s per worker for "
                        f"{design['sizes'][0]}); this invocation took {wall.get('total', 0) / 60:.1f} min "
                        f"({wall.get('runs', 0) / 60:.1f} min training and scoring runs, the rest fitting; runs "
                        f"finished in earlier invocations are reused, not retrained)."))
    blocks.append(("h", 2, "Runs"))
    blocks.append(("p", f"Every run of this study (study = 'study') is one line of {RUNS_JSONL_FILE} beside this report: "
                        f"its config where it differs from the study's base, its summary and its evaluation curve; "
                        f"`scarce runs {RUNS_JSONL_FILE}` lists them. The run directories, checkpoints included, stay in "
                        f"the study's runs/ folder on the machine that ran it."))
    blocks.append(runs_table(results))
    md, page = out / "report.md", out / "report.html"
    write_bytes_atomic(md, _md(blocks).encode())
    write_bytes_atomic(page, _html(blocks, title).encode())
    return md, page
