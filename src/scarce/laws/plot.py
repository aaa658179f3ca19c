"""The picture of a fit: points and fitted curves per group with the asymptote, and observed vs predicted."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from scarce.laws.forms import Law

MAX_GROUPS = 12  # beyond this a legend is unreadable; the remaining groups are still drawn as points


def plot_fit(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray, path: Path, along: str | None = None) -> Path:
    """Left: loss against `along` (default: the law's first variable), one curve per combination of the
    other variables, drawn past the largest point to show the extrapolation, with the asymptote E as a
    dashed line. Right: observed against predicted loss."""
    import matplotlib.pyplot as plt

    from scarce.report import save_figure  # first: it selects matplotlib's file-only backend

    along = along or law.variables[0]
    others = [v for v in law.variables if v != along]
    keys = list(zip(*(x[v] for v in others))) if others else [()] * len(y)
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    lo, hi = float(np.min(x[along])), float(np.max(x[along]))
    span = np.geomspace(lo, hi * 10, 200)
    cmap = plt.get_cmap("viridis")
    if len(groups) <= MAX_GROUPS:
        curves = sorted(groups)
        colors = cmap(np.linspace(0, 0.9, max(len(curves), 1)))
        for key, color in zip(curves, colors):
            ax.scatter(x[along][groups[key]], y[groups[key]], color=color, s=18,
                       label=", ".join(f"{v}={k:.3g}" for v, k in zip(others, key)) or None)
    else:
        # Scattered designs (every point its own group): colour points by the first other variable and
        # draw curves at its quantiles, the remaining variables at their medians.
        shade = np.log(x[others[0]])
        shade = (shade - shade.min()) / max(np.ptp(shade), 1e-12) * 0.9
        ax.scatter(x[along], y, c=cmap(shade), s=14)
        # An intervention indicator is 0 or 1, never its median: curves are drawn for the baseline (0).
        medians = [0.0 if v == getattr(law, "indicator", None) else float(np.median(x[v])) for v in others[1:]]
        quantiles = np.quantile(x[others[0]], [0.05, 0.25, 0.5, 0.75, 0.95])
        curves = [(float(q), *medians) for q in quantiles]
        colors = cmap(np.interp(np.log(quantiles), [np.log(x[others[0]]).min(), np.log(x[others[0]]).max()],
                                [0, 0.9]))
    for key, color in zip(curves, colors):
        curve_x = {along: span, **{v: np.full(len(span), k) for v, k in zip(others, key)}}
        ax.plot(span, law.predict(curve_x), color=color, lw=1.2,
                label=None if len(groups) <= MAX_GROUPS else ", ".join(f"{v}={k:.3g}" for v, k in zip(others, key)))
    if "E" in law.params_:
        ax.axhline(law.params_["E"], color="grey", ls="--", lw=1, label=f"asymptote E = {law.params_['E']:.4g}")
    ax.set_xscale("log")
    ax.set_xlabel(along)
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(law.formula, fontsize=8)
    ax.legend(fontsize=7)

    predicted = law.predict(x)
    ax2.scatter(predicted, y, s=14)
    bounds = [min(predicted.min(), y.min()), max(predicted.max(), y.max())]
    ax2.plot(bounds, bounds, color="grey", lw=1)
    ax2.set_xlabel("predicted loss")
    ax2.set_ylabel("observed loss")
    rmse = float(np.sqrt(np.mean((np.log(predicted) - np.log(y)) ** 2)))  # of these points, whatever the law's origin
    ax2.set_title(f"{law.name}: RMSE(log loss) = {rmse:.3g}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_tiered(tiers, path: Path) -> Path:
    """One panel per level of a tiered asymptote: each group's values against the level's variable with
    its fitted power law (extended 10× past the largest value) and its asymptote as a dashed line."""
    import matplotlib.pyplot as plt

    from scarce.report import save_figure  # first: it selects matplotlib's file-only backend

    fig, axes = plt.subplots(1, len(tiers.levels), figsize=(5 * len(tiers.levels), 4.2), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, var in zip(axes[0], tiers.levels):
        groups = sorted(tiers.laws[var].items())
        colors = cmap(np.linspace(0, 0.9, max(len(groups), 1)))
        for (key, law), color in zip(groups, colors):
            values = law.x_[var]
            span = np.geomspace(values.min(), values.max() * 10, 100)
            label = ", ".join(f"{c}={k:.3g}" for c, k in zip(tiers.group_columns[var], key)) or None
            ax.scatter(values, law.y_, color=color, s=14)
            ax.plot(span, law.predict({var: span}), color=color, lw=1.1,
                    label=label if len(groups) <= MAX_GROUPS else None)
            ax.axhline(law.params_["E"], color=color, ls="--", lw=0.7)
        ax.set_xscale("log")
        ax.set_xlabel(var)
        ax.set_ylabel("loss (nats/token)" if var == tiers.levels[0] else "asymptote of the level below")
        ax.set_title(f"level {var}: E + A·{var}^(−α)", fontsize=9)
        if len(groups) <= MAX_GROUPS and len(groups) > 1:
            ax.legend(fontsize=6)
    final = tiers.final[()]
    fig.suptitle(f"joint asymptote {final}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
