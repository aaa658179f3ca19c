"""Distillation study: a student trained from scratch to keep an ensemble's (or one model's) gain.

Sequence level (Kim et al. 2025, arXiv 2509.14786): the teachers sample documents unconditionally at
temperature 1 into a synthetic token file (reused when the same teachers, token count and seed are asked
for again), and the student trains on real batches mixed with synthetic ones at fraction w
(scarce.data.mixture). Token level: the student's loss mixes next-token prediction with the KL to the
teachers' averaged distribution on real text (scarce.train.objectives.TokenDistillation).

Both end with the retained fraction (L_single − L_student) / (L_single − L_ensemble): 1 when the student
matches the ensemble, 0 when it is no better than one member.
"""

import hashlib
import json
import math
from pathlib import Path

import torch
from rich.console import Console

from scarce.config import RunConfig
from scarce.data.mixture import write_synthetic
from scarce.data.store import prepare_store
from scarce.errors import ScarceError
from scarce.evals.ensemble import check_same_data, load_members, subset_losses
from scarce.train.sample import sample_documents

MODES = ("sequence", "token")
SYNTHETIC_DIR = "synthetic"  # under the student's runs_dir


def default_weight(mode: str, n_teachers: int) -> float:
    """The paper's best synthetic fraction: 0.9 from an ensemble, 0.75 for self-distillation; token
    level (not in the paper) weighs NTP and KL equally."""
    if mode == "token":
        return 0.5
    return 0.9 if n_teachers > 1 else 0.75


MAX_PASSES = 3.0  # passes over the synthetic pool the pool is sized for (Kim et al. repeat synthetic data ≤ ~3×)
WARN_PASSES = 4.0  # above this the student memorizes the pool: a warning


def synthetic_passes(pool_tokens: int, unique_tokens: int, epochs: float, weight: float) -> float:
    """Passes the student makes over a synthetic pool: it trains E·U/(1 − w) tokens (E passes over the real
    data, which are a fraction 1 − w of its batches), w of them synthetic: w·E·U / ((1 − w)·pool)."""
    return weight * epochs * unique_tokens / ((1 - weight) * max(1, pool_tokens))


def pool_tokens(unique_tokens: int, epochs: float, weight: float, passes: float = MAX_PASSES) -> int:
    """The synthetic pool for at most `passes` passes: w·E·U / ((1 − w)·passes) tokens."""
    return max(1, math.ceil(weight * epochs * unique_tokens / ((1 - weight) * passes)))


def _teacher_key(run_dir: Path) -> dict:
    summary = Path(run_dir) / "summary.json"
    steps = json.loads(summary.read_text()).get("steps") if summary.is_file() else None
    return {"run": str(Path(run_dir).resolve()), "steps": steps}


def sample_synthetic(
    teachers: list[Path], n_tokens: int, out_dir: Path, seed: int = 0, batch_size: int = 64, progress: bool = True,
    console: Console | None = None,
) -> Path:
    """The teachers' samples (temperature 1, no top-k) as a synthetic token file in `out_dir`; an existing
    file from the same teachers, token count and seed is reused."""
    about = {"teachers": [_teacher_key(t) for t in teachers], "requested_tokens": n_tokens, "seed": seed, "temperature": 1.0}
    key = hashlib.sha256(json.dumps(about, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(out_dir) / f"synthetic-{key}.bin"
    if path.with_suffix(".json").is_file():
        (console or Console(stderr=True)).print(f"reusing synthetic tokens {path}")
        return path
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    members, store = load_members(teachers, device)
    stats: dict = {}
    documents = [
        d.tokens for d in sample_documents(
            [m.model for m in members], n_tokens, store.eot_id, temperature=1.0, batch_size=batch_size, seed=seed,
            progress=progress, console=console, stats=stats,
        )
    ]
    about["sampled_tokens_per_second"] = stats["tokens"] / stats["seconds"]
    return write_synthetic(path, documents, store, about)


def distill_config(base: RunConfig, mode: str, teachers: list[Path], weight: float, synthetic: Path | None) -> RunConfig:
    """The student's config: `base` with its [distill] section filled in (and a study name)."""
    if mode not in MODES:
        raise ScarceError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    data = base.model_dump(mode="json")
    data["study"] = base.study or f"{base.name}-distill"
    data["distill"] = {"kind": mode, "weight": weight, "synthetic": str(synthetic) if synthetic else None,
                       "teachers": [str(t) for t in teachers]}
    from scarce.config import resolve_config

    return resolve_config(data)


def retained_fraction(single: float, ensemble: float, student: float) -> float | None:
    """(L_single − L_student) / (L_single − L_ensemble); None when the ensemble is no better than one model."""
    gain = single - ensemble
    return (single - student) / gain if gain > 0 else None


def distillation_report(
    teachers: list[Path], student: Path, eval_tokens: int | None, single_loss: float | None = None,
    ensemble_loss: float | None = None,
) -> dict:
    """Teachers' and student's losses on one validation sample, and the retained fraction.

    L_single defaults to the teachers' mean loss and L_ensemble to their logit-averaged loss; give them
    (e.g. from a separately trained single model) to override.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    members, store = load_members([*teachers, student], device)
    k = len(teachers)
    subsets = [(i,) for i in range(k)] + [tuple(range(k)), (k,)]
    seq_len = min(m.config.model.seq_len for m in members)
    losses = subset_losses([m.model for m in members], store.eval_sample(eval_tokens), seq_len, subsets)
    teacher_losses, measured_ensemble, student_loss = losses[:k], float(losses[k]), float(losses[k + 1])
    single = float(teacher_losses.mean()) if single_loss is None else single_loss
    ensemble = measured_ensemble if ensemble_loss is None else ensemble_loss
    fraction = retained_fraction(single, ensemble, student_loss)
    return {
        "student": str(student),
        "teachers": [{"run": str(t), "loss": float(loss)} for t, loss in zip(teachers, teacher_losses)],
        "loss_single": single, "loss_ensemble": ensemble, "loss_student": student_loss,
        "retained_fraction": fraction,
        **({} if fraction is not None else {"retained_fraction_note": "L_single ≤ L_ensemble: no ensemble gain to retain "
                                             "(self-distillation: pass --single-loss and --ensemble-loss)"}),
        "eval_tokens": eval_tokens,
    }


def check_teachers(base: RunConfig, teachers: list[Path]) -> None:
    """Before sampling or training: teachers and student must share one token store."""
    from scarce import runs

    if not teachers:
        raise ScarceError("give at least one --teacher run directory")
    # equal data sections name one token store (its directory is keyed by them), so the configs suffice
    configs = [(Path("the student config"), base)] + [(Path(t), RunConfig.model_validate(runs.read_config(t))) for t in teachers]
    check_same_data(configs, what="a student and its teachers")


def student_config(
    base: RunConfig, teachers: list[Path], mode: str, weight: float | None = None, synthetic: Path | None = None,
    synthetic_tokens: int | None = None, sample_batch_size: int = 64, seed: int = 0, progress: bool = True,
    console: Console | None = None,
) -> RunConfig:
    """The student's config, ready to train (scarce.train.trainer.train, or as a job of any executor).

    Checks the teachers against `base`; in sequence mode samples the synthetic tokens first (unless
    `synthetic` names a file, or w = 0), reusing a file the same teachers, token count and seed wrote.
    `weight` defaults to default_weight(mode, len(teachers)); `synthetic_tokens` to the pool the student
    passes over at most MAX_PASSES times (`pool_tokens`); a pool it passes over more than WARN_PASSES times
    is warned about (the student memorizes it: its synthetic-batch loss falls far below the teachers').
    """
    teachers = [Path(t) for t in teachers]
    if mode not in MODES:
        raise ScarceError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_teachers(base, teachers)
    weight = default_weight(mode, len(teachers)) if weight is None else weight
    if mode == "sequence" and not 0 <= weight < 1:
        raise ScarceError(f"--weight {weight}: the synthetic fraction w must be in [0, 1)")
    if mode == "sequence" and synthetic is None and weight > 0:
        store = prepare_store(base.data.corpus, **base.data.store_options())
        unique = base.data.unique_tokens or store.train_token_count
        n_tokens = synthetic_tokens or pool_tokens(unique, base.train.epochs, weight)
        passes = synthetic_passes(n_tokens, unique, base.train.epochs, weight)
        if passes > WARN_PASSES:
            (console or Console(stderr=True)).print(
                f"[yellow]warning:[/yellow] the student will pass over the {n_tokens:,} synthetic tokens {passes:.1f} "
                f"times (more than {WARN_PASSES:g}) and memorize them; give --synthetic-tokens "
                f"{pool_tokens(unique, base.train.epochs, weight):,} or more for {MAX_PASSES:g} passes")
        synthetic = sample_synthetic(teachers, n_tokens, Path(base.runs_dir) / SYNTHETIC_DIR, seed, sample_batch_size, progress, console)
    return distill_config(base, mode, teachers, weight, synthetic)


def run_distillation(
    base: RunConfig, teachers: list[Path], mode: str, weight: float | None = None, synthetic: Path | None = None,
    synthetic_tokens: int | None = None, sample_batch_size: int = 64, seed: int = 0, progress: bool = True,
    console: Console | None = None, single_loss: float | None = None, ensemble_loss: float | None = None,
) -> dict:
    """Sample (sequence mode, unless `synthetic` is given), train the student, report the retained fraction."""
    from scarce.train.trainer import train

    config = student_config(base, teachers, mode, weight, synthetic, synthetic_tokens, sample_batch_size, seed, progress, console)
    student = train(config, progress=progress)
    report = distillation_report([Path(t) for t in teachers], student, base.data.eval_tokens, single_loss, ensemble_loss)
    synthetic = config.distill.synthetic
    return {"mode": mode, "weight": config.distill.weight, "synthetic": str(synthetic) if synthetic else None, **report}
