"""The ensemble law L(K) = E + A / K^alpha fitted to sub-ensemble losses, and its plot."""

from pathlib import Path

import numpy as np

from scarce.laws import PowerLaw, fit_law
from scarce.laws.derived import asymptote
from scarce.laws.io import fit_to_json

K_LAW_BOOTSTRAP = 200  # resamples for the parameters' and the asymptote's intervals, as `scarce fit --bootstrap`


def fit_ensemble_law(losses_by_k: list[dict], bootstrap: int = K_LAW_BOOTSTRAP) -> dict:
    """Fit L(K) = E + A / K^alpha to (k, loss) points by least squares on raw loss (as Kim et al. fit),
    with the law library's report: bootstrap intervals, the asymptote's interval, and `identified`
    (false, with `reason`, when the points cannot determine the parameters: no more points than
    parameters, or the fit's `unidentified` list). With fewer than 3 points the law is not fitted."""
    if len(losses_by_k) < 3:
        return {"fitted": False, "reason": f"{len(losses_by_k)} ensemble sizes; the K-law's 3 parameters need K ≥ 3 members"}
    law = fit_law(PowerLaw(variable="K"), {"K": [p["k"] for p in losses_by_k]}, [p["loss"] for p in losses_by_k],
                  loss="mse", bootstrap=bootstrap)
    out = {"fitted": True, **fit_to_json(law, columns={"K": "k"}, y_column="loss", source="scarce ensemble eval",
                                         derived={"asymptote": asymptote(law)}), "identified": True}
    free = len(law.param_names)
    if len(losses_by_k) <= free:
        # the curve passes through every point: zero residuals leave the bootstrap nothing to resample
        for entry in [*out["parameters"].values(), out["derived"]["asymptote"]]:
            entry["interval"] = None
        out.update(identified=False, reason=f"{len(losses_by_k)} ensemble sizes for {free} parameters: the law passes "
                                            "through every point, so nothing tests it and nothing bounds E; train more members")
    elif law.report_.unidentified:
        out.update(identified=False, reason=f"not determined by the data: {', '.join(law.report_.unidentified)}")
    return out


def plot_ensemble(result: dict, path: Path) -> Path:
    """Loss against members K (log axis), with the fitted law drawn past K and its asymptote E."""
    import matplotlib.pyplot as plt

    from scarce.report import save_figure  # first: it selects matplotlib's file-only backend

    ks = np.array([p["k"] for p in result["losses_by_k"]], dtype=float)
    losses = np.array([p["loss"] for p in result["losses_by_k"]])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(ks, losses, color="C0", zorder=3, label=f"mean over sub-ensembles ({result['combine']} averaged)")
    law = result["law"]
    if law["fitted"]:
        p = {k: v["value"] for k, v in law["parameters"].items()}
        span = np.geomspace(1, ks.max() * 8, 200)
        ax.plot(span, p["E"] + p["A"] * span ** -p["alpha"], color="C0", lw=1.2,
                label=f"{p['E']:.4g} + {p['A']:.3g} / K^{p['alpha']:.3g}")
        ax.axhline(p["E"], color="grey", ls="--", lw=1, label=f"asymptote E = {p['E']:.4g}")
    else:
        ax.set_title(f"K-law not fitted: {law['reason']}", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("ensemble members K")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
