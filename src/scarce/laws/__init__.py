"""Fit, compare and extrapolate scaling laws on plain tables of numbers (no torch).

    from scarce.laws import Chinchilla
    law = Chinchilla().fit({"N": params, "D": tokens}, loss, bootstrap=200)
    law.params_, law.intervals_, law.predict({"N": [1e9], "D": [2e10]})

See docs/laws.md for the forms, the fitting procedure, derived quantities and the JSON schema.
"""

from scarce.laws.compare import Comparison, compare_laws
from scarce.laws.derived import (
                                 Estimate,
                                 TieredAsymptote,
                                 asymptote,
                                 data_efficiency,
                                 effective_data,
                                 effective_data_multiplier,
                                 estimate,
                                 tiered_asymptote,
)
from scarce.laws.fit import FitReport, fit_law
from scarce.laws.forms import (
                                 LAWS,
                                 Chinchilla,
                                 CustomLaw,
                                 DataConstrained,
                                 Law,
                                 Parameter,
                                 PowerLaw,
                                 SoftQ,
                                 SpecializationAdditive,
                                 SpecializationTransfer,
                                 WithDataMultiplier,
                                 get_law,
                                 law_from_dict,
)
from scarce.laws.io import law_from_fit_json
from scarce.laws.plan import plan

__all__ = [
    "LAWS", "Chinchilla", "Comparison", "CustomLaw", "DataConstrained", "Estimate", "FitReport", "Law",
    "Parameter", "PowerLaw", "SoftQ", "SpecializationAdditive", "SpecializationTransfer", "TieredAsymptote",
    "WithDataMultiplier", "asymptote", "compare_laws", "data_efficiency", "effective_data",
    "effective_data_multiplier", "estimate", "fit_law", "get_law", "law_from_dict", "law_from_fit_json", "plan",
    "tiered_asymptote",
]
