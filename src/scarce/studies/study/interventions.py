"""The interventions a study measures, as data: a name, config overrides, how the effect is measured
and what it is compared with. Adding one is adding an `Intervention` to INTERVENTIONS."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scarce.config import RunConfig
from scarce.errors import ScarceError

STANDARD_WEIGHT_DECAY = 0.1  # the standard recipe (Kim et al. 2025): weight decay 0.1, only epochs tuned
DISTILL_WEIGHT = 0.75  # synthetic batch fraction: Kim et al.'s best for self-distillation; student steps ×4
PROCEDURAL_FRACTION = 0.03  # warm-up tokens as a fraction of the natural training tokens (Jiang et al.: 0.1-3%)

@dataclass(frozen=True)
class Intervention:
    """One trick the study measures.

    `measure` says how its effect is measured: "grid" (the best of the weight-decay × epochs grid),
    "single" (one run per budget at the reference setting plus `overrides`), "ensemble" (K seeds of the
    reference setting, logits averaged), "distill" (a student of the ensemble) or "specialize".
    `reference` is the recipe it is compared with: "standard" (wd 0.1, epochs tuned) or "tuned".
    `overrides` are dotted config keys, or a function of the reference run's config returning them.
    `requires(base)` returns why it cannot run on this study (None when it can).
    """

    name: str
    title: str
    measure: str
    reference: str = "tuned"
    overrides: dict[str, Any] | Callable[[RunConfig], dict[str, Any]] = field(default_factory=dict)
    budgets: str = "all"  # "all" budgets, or only the "smallest" (costly ones)
    requires: Callable[[RunConfig], str | None] = lambda base: None
    published: str = ""  # the published figure this effect corresponds to (printed beside it in the report)

    def overrides_for(self, config: RunConfig) -> dict[str, Any]:
        return self.overrides(config) if callable(self.overrides) else dict(self.overrides)

    def where(self, budgets: Sequence[int]) -> list[int]:
        """The budgets it is measured at."""
        return list(budgets) if self.budgets == "all" else list(budgets[:1])


def _procedural_overrides(config: RunConfig) -> dict[str, Any]:
    natural = (config.data.unique_tokens or 0) * config.train.epochs
    step = config.train.batch_size * config.model.seq_len
    return {"procedural.task": "dyck", "procedural.transfer": ["attention", "mlp"],
            "procedural.tokens": max(step, int(PROCEDURAL_FRACTION * natural) // step * step)}


def _needs_domains(base: RunConfig) -> str | None:
    if base.data.domains is None:
        return "needs a domain corpus (data.domains); this corpus is a single domain"
    return "domain corpora are studied with `scarce specialize` (docs/specialization.md); `scarce study` takes one corpus"


INTERVENTIONS: tuple[Intervention, ...] = (
    Intervention("tuned", "tuned weight decay and epochs", "grid", reference="standard",
                 published="Kim et al. 2025: tuned regularization 2.29× data efficiency at 200M tokens"),
    Intervention("mir", "masked-input regularization (MIR)", "single", overrides={"objective.kind": "mir"},
                 published="Xu et al. 2026: MIR ≈ 1.3× unique data"),
    Intervention("ensemble", "ensemble of K seeds (logits averaged)", "ensemble",
                 published="Kim et al. 2025: joint ensemble recipe 5.17× data efficiency at 200M tokens"),
    Intervention("distill", "sequence distillation from the ensemble", "distill",
                 overrides={"distill.weight": DISTILL_WEIGHT}, budgets="smallest",
                 published="Kim et al. 2025: a distilled student retains 83% of the ensemble's gain"),
    Intervention("procedural", "procedural warm-up (k-Dyck; attention and MLP transferred)", "single",
                 overrides=_procedural_overrides,
                 published="Jiang, Shinnick et al.: 55–86% of the data to the same loss (1.2–1.8×)"),
    Intervention("specialize", "domain specialization", "specialize", requires=_needs_domains),
)


def select_interventions(names: Sequence[str] | None) -> list[Intervention]:
    known = {i.name: i for i in INTERVENTIONS}
    if not names:
        return list(INTERVENTIONS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ScarceError(f"unknown intervention {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    # Every other intervention is measured on top of the tuned grid, which is always run and reported.
    return [known[n] for n in dict.fromkeys(["tuned", *names])]
