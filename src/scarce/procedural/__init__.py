"""Procedural data: seeded, vectorized generators of formal-language and algorithmic sequences
(k-Dyck, stack, sort, ECA, ...) and a batch source that streams them to the trainer. See docs/procedural.md.

The task registry lives in scarce.procedural.registry (it also holds the diagnostics of
scarce.evals.diagnostics, which build on this package's base module)."""
