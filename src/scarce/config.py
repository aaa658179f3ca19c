"""Run configuration: pydantic models for every section, read from TOML with dotted command-line overrides.

A run is fully described by its resolved config (saved in its run directory) plus the code version.
Unknown keys and bad values are errors that name the key; nothing is written before a config validates.
"""

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scarce.errors import ScarceError, format_validation_error
from scarce.procedural.registry import TASKS, get_task
from scarce.shapes import SIZES

# The batch sources `data.source` may name: the keys of scarce.data.sources.SOURCES (a test holds them equal;
# the schema cannot import the data layer above it).
SOURCE_NAMES = ("epochs", "procedural")


def one_of(what: str, value: str, names) -> str:
    """Every plugin name (size, batch source, procedural task) is checked when a config is parsed, this way."""
    if value not in names:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(names)}")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DomainConfig(Section):
    """One labelled domain of a domain corpus (docs/specialization.md)."""

    source: str | None = None  # a catalog name or a path to the user's files; None: the domain's own name
    weight: float | None = Field(None, ge=0)  # share of training sequences; None on every domain: by size
    unique_tokens: int | None = Field(None, ge=2)  # cap on the domain's unique training tokens; None: all


class DataConfig(Section):
    corpus: str = "kjv"  # a catalog name (`scarce data list`) or a path to the user's files
    source: str = "epochs"  # the batch source (scarce.data.sources): "epochs" = train.epochs over data.unique_tokens
    tokenizer: Literal["bpe", "gpt2"] = "bpe"
    vocab_size: int = Field(8192, ge=258)  # for "bpe"; "gpt2" has its own
    val_fraction: float = Field(0.05, gt=0, lt=1)
    split_seed: int = Field(0, ge=0)  # which documents are held out, and the order budgets are cut from
    text_field: str = Field("text", min_length=1)  # the JSON field / Parquet or Arrow column holding each document
    bpe_sample_bytes: int = Field(128 * 2**20, ge=1)  # "bpe" trains on at most this much training text (a seeded sample)
    unique_tokens: int | None = Field(None, ge=2)  # D; None: the whole training split
    eval_tokens: int | None = Field(65536, ge=1)  # validation tokens per evaluation (per domain); None: all
    # A corpus of labelled domains sharing one tokenizer, instead of `corpus`: {name = weight} or
    # {name = {source, weight, unique_tokens}}. See scarce.data.domains.
    domains: dict[str, DomainConfig] | None = None

    @field_validator("domains", mode="before")
    @classmethod
    def _weight_shorthand(cls, domains):
        if isinstance(domains, dict):  # `kjv = 1.0` is `kjv = {weight = 1.0}`
            return {k: {"weight": v} if isinstance(v, int | float) and not isinstance(v, bool) else v for k, v in domains.items()}
        return domains

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        return one_of("batch source", source, SOURCE_NAMES)

    @model_validator(mode="after")
    def _domains(self):
        if self.domains is None:
            return self
        if not self.domains:
            raise ValueError("data.domains is empty: name at least one domain, e.g. data.domains = {kjv = 1.0}")
        if self.unique_tokens is not None:
            raise ValueError("data.unique_tokens applies to a single corpus; with data.domains cap each domain "
                             "with data.domains.NAME.unique_tokens")
        given = [name for name, d in self.domains.items() if d.weight is not None]
        if given and len(given) != len(self.domains):
            missing = ", ".join(f"data.domains.{n}.weight" for n in self.domains if n not in given)
            raise ValueError(f"give every domain a weight or none (then weights follow size); missing {missing}")
        if given and not sum(d.weight for d in self.domains.values()) > 0:
            raise ValueError("data.domains weights must sum to a positive number (a weight-0 domain is only evaluated)")
        return self

    def store_options(self) -> dict:
        """Keyword arguments of scarce.data.store.prepare_store for this corpus."""
        return dict(
            tokenizer=self.tokenizer, vocab_size=self.vocab_size, val_fraction=self.val_fraction, split_seed=self.split_seed,
            text_field=self.text_field, bpe_sample_bytes=self.bpe_sample_bytes,
        )


class ModelConfig(Section):
    size: str = "micro"  # a name from the ladder in scarce.model.SIZES; the fields below override it
    seq_len: int = Field(256, ge=1)
    n_layers: int | None = Field(None, ge=1)
    d_model: int | None = Field(None, ge=2)
    n_heads: int | None = Field(None, ge=1)
    ffn_hidden: int | None = Field(None, ge=1)
    qk_norm: bool = True
    dropout: float = Field(0.0, ge=0, lt=1)
    positions: Literal["rope", "learned"] = "rope"  # rotary, or learned absolute embeddings (GPT-2's wpe)
    block: Literal["llama", "gpt2"] = "llama"  # RMSNorm + SwiGLU, no biases; or GPT-2's LayerNorm + GELU, biases

    @field_validator("size")
    @classmethod
    def _known_size(cls, size: str) -> str:
        return one_of("size", size, SIZES)


class OptimConfig(Section):
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)  # decoupled: p ← p·(1 − lr·weight_decay), as torch's AdamW
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables clipping
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_fraction: float = Field(0.01, ge=0, lt=1)
    decay_fraction: float = Field(0.1, gt=0, le=1)  # wsd: linear decay over this final fraction
    final_lr_fraction: float = Field(0.0, ge=0, le=1)  # floor of cosine / end of wsd, as a fraction of lr
    # Absolute lengths in training tokens, overriding the fractions: a schedule that does not move with the
    # run's length, so a WSD decay branch (init.mode="continue") reproduces a direct run exactly.
    warmup_tokens: int | None = Field(None, ge=0)
    decay_tokens: int | None = Field(None, ge=1)  # wsd only

    @model_validator(mode="after")
    def _decay_tokens(self):
        if self.decay_tokens is not None and self.schedule != "wsd":
            raise ValueError(f"decay_tokens is the wsd decay length; schedule is {self.schedule!r} (set schedule='wsd')")
        return self
    decay_embeddings: bool = False
    decay_norms: bool = False


class TrainConfig(Section):
    epochs: int = Field(1, ge=1)
    # Run length in training tokens, overriding epochs: ceil(tokens / (batch_size · seq_len)) steps over as
    # many (partial) epochs as that takes.
    tokens: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)  # sequences per optimizer step, across all processes
    grad_accum: int = Field(1, ge=1)  # micro-batches per step on each process
    seed: int = Field(0, ge=0)  # model init, dropout and the objective's own randomness (MIR masks)
    data_seed: int = Field(0, ge=0)  # epoch permutations
    eval_every: int = Field(0, ge=0)  # steps; 0: only at the end
    checkpoint_every: int = Field(0, ge=0)  # steps; 0: only at the end
    keep_checkpoints: int = Field(2, ge=1)
    checkpoint_steps: list[Annotated[int, Field(ge=1)]] = []  # also checkpoint at these steps, and keep them (decay-branch points)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = Field(10, ge=1)
    # torch.compile the model; "auto": where benchmarks/bench_train.py measured it faster (see docs/training.md)
    compile: bool | Literal["auto"] = "auto"


class ObjectiveConfig(Section):
    """How a batch becomes a loss: next-token prediction, or NTP plus masked-input regularization (MIR)."""

    kind: Literal["ntp", "mir"] = "ntp"
    # MIR (Xu et al. 2026): L = L_NTP(x) + mir_weight · L_NTP(mask_r(x)), r ~ U(mask_ratio_min, mask_ratio_max) per sequence
    mir_weight: float = Field(0.4, ge=0)
    mask_ratio_min: float = Field(0.0, ge=0, lt=1)
    mask_ratio_max: float = Field(0.5, ge=0, lt=1)
    protected_prefix: int = Field(8, ge=0)  # input positions never masked
    # "two_pass": two forward/backward passes per step (the reference code); "concatenated": one pass over
    # the clean and masked copies stacked along the batch; "auto": the one measured cheaper (docs/training.md)
    mir_execution: Literal["auto", "two_pass", "concatenated"] = "auto"

    @property
    def extra_input_tokens(self) -> int:
        """Input-only tokens the objective adds to the model's embedding: MIR's mask token, never predicted."""
        return 1 if self.kind == "mir" else 0

    @model_validator(mode="after")
    def _ratio_range(self):
        if self.mask_ratio_min > self.mask_ratio_max:
            raise ValueError(
                f"mask_ratio_min={self.mask_ratio_min} must not exceed mask_ratio_max={self.mask_ratio_max}"
            )
        return self


WEIGHT_GROUPS = ("attention", "mlp", "norms", "embeddings", "head", "positions")  # positions: learned ones only
# The procedural reference's narrower selections (scarce.model.transferred): "heads" = the q/k/v projection
# only (its attn.c_attn); "attn+ln" = attention and the norm before it (attn.c_attn, attn.c_proj, ln_1)
TRANSFER_SELECTIONS = ("heads", "attn+ln")


class InitSource(Section):
    """One more run whose checkpoint hands on its own weight groups (init.sources)."""

    from_run: Path
    checkpoint_step: int | None = Field(None, ge=1)  # which of its checkpoints; None: the newest intact one
    groups: list[Literal[WEIGHT_GROUPS + TRANSFER_SELECTIONS]]


class InitConfig(Section):
    """Where the weights start: from scratch, or named weight groups copied from another run's checkpoint,
    and from further runs' checkpoints (`sources`: e.g. attention from a set warm-up, the MLP from an ECA one)."""

    from_run: Path | None = None  # a run directory; None: from scratch
    checkpoint_step: int | None = Field(None, ge=1)  # which of its checkpoints; None: the newest intact one
    groups: list[Literal[WEIGHT_GROUPS + TRANSFER_SELECTIONS]] = list(WEIGHT_GROUPS)  # copied; the rest fresh
    # embeddings not copied: "random" (the usual init) or "mean" (every row of the input embedding, and of the
    # output head unless copied, = the mean of the source's embedding rows: the reference's "average")
    embedding_init: Literal["random", "mean"] = "random"
    # "weights": copy `groups` and train a new run; "continue": resume the source's whole training state
    # (weights, optimizer, data position, objective, RNG) at the checkpoint, with this run's own length and
    # schedule: a WSD decay branch (docs/specialization.md)
    mode: Literal["weights", "continue"] = "weights"
    sources: list[InitSource] = []  # further runs, each copying its own groups (no weight from two runs)

    @model_validator(mode="after")
    def _groups(self):
        if self.sources and (self.from_run is None or self.mode == "continue"):
            raise ValueError("sources add groups from further runs to from_run's: give from_run, with mode='weights'")
        named = self.groups + [g for s in self.sources for g in s.groups]
        if self.sources and len(set(named)) != len(named):
            raise ValueError(f"a group is copied from two runs: groups {self.groups} and sources' groups "
                             f"{[s.groups for s in self.sources]} must not share a name")
        if self.mode == "continue":
            if self.from_run is None:
                raise ValueError("mode='continue' needs from_run (the run to branch from)")
            if set(self.groups) != set(WEIGHT_GROUPS) or self.embedding_init != "random":
                raise ValueError("mode='continue' takes the whole model: leave groups and embedding_init at their defaults")
        if len(set(self.groups)) != len(self.groups):
            raise ValueError(f"groups lists a group twice: {self.groups}")
        if self.embedding_init == "mean" and "embeddings" in self.groups:
            raise ValueError("embedding_init='mean' re-initializes the embeddings: drop 'embeddings' from groups")
        return self


class DistillConfig(Section):
    """Distillation from teacher runs (an ensemble, or one model for self-distillation); docs/ensembles.md.

    "sequence": sequences (or, with mix = "batch", whole batches) drawn from `synthetic` (teacher samples,
    `scarce sample`) with probability `weight`, real otherwise, for real sequences / (1 − weight) in all.
    "token": loss = (1 − weight)·NTP + weight·KL(the teachers' averaged next-token distribution ‖ the
    student's) on real text.
    """

    kind: Literal["none", "sequence", "token"] = "none"
    weight: float = Field(0.0, ge=0, le=1)  # sequence: synthetic fraction w, in [0, 1); token: KL weight
    synthetic: Path | None = None  # sequence: the teachers' token file (a .bin beside its .json description)
    # sequence: draw real or synthetic per example (a batch mixes both, as levanter's mixtures) or per batch
    mix: Literal["example", "batch"] = "example"
    teachers: list[Path] = []  # teacher run directories (token: their logits are averaged; sequence: provenance)

    @field_validator("synthetic", "teachers")
    @classmethod
    def _resolved(cls, value):
        """Absolute when parsed, so the run's stored config finds them from any directory (a resume)."""
        if value is None:
            return None
        return [p.expanduser().resolve() for p in value] if isinstance(value, list) else value.expanduser().resolve()

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "sequence":
            if self.weight >= 1:
                raise ValueError(f"weight={self.weight}: the synthetic fraction w must be in [0, 1) (w = 1 never sees real data)")
            if self.synthetic is None and self.weight > 0:
                raise ValueError("kind='sequence' needs synthetic = the teachers' sampled token file")
        if self.kind == "token" and not self.teachers:
            raise ValueError("kind='token' needs teachers = [teacher run directories]")
        return self


class WarmupOptimConfig(OptimConfig):
    """The procedural stage's own optimizer; defaults are the paper's stage 1 (constant lr 5e-4, wd 0.1)."""

    lr: float = Field(5e-4, gt=0)
    schedule: Literal["cosine", "wsd", "constant"] = "constant"


TRANSFER_GROUPS = ("attention", "mlp", "norms")  # what a procedural warm-up hands on by default (its vocabulary is its own)
# and may: learned position embeddings too (model.positions = "learned"), as the reference copies GPT-2's wpe
TRANSFER_OPTIONAL = ("positions",)


class ProceduralConfig(Section):
    """Procedural data for a run (docs/procedural.md). mode "warmup": a stage on the task's stream, trained
    first (and reused when already done), whose `transfer` groups this run starts from; mode "mix": the
    task's batches front-loaded into this run's own stream, `fraction` of its training tokens."""

    task: str | None = None  # a task of `scarce procedural list`; None: no procedural data
    params: dict[str, Any] = {}  # the task's parameters, e.g. {k = 64, length = 2048}
    mode: Literal["warmup", "mix"] = "warmup"
    tokens: int | None = Field(None, ge=1)  # warmup: the stage's training tokens (or `steps`)
    steps: int | None = Field(None, ge=1)  # warmup: the stage's optimizer steps (or `tokens`)
    batch_size: int | None = Field(None, ge=1)  # warmup: sequences per step; None: train.batch_size
    transfer: list[Literal[TRANSFER_GROUPS + TRANSFER_OPTIONAL + TRANSFER_SELECTIONS]] = list(TRANSFER_GROUPS)  # warmup: copied
    embedding_init: Literal["random", "mean"] = "random"  # warmup: "mean": every embedding and head row the warm-up's mean row
    fraction: float | None = Field(None, ge=0, lt=1)  # mix: share of the run's training tokens, first
    optim: WarmupOptimConfig = WarmupOptimConfig()  # warmup: the stage's optimizer

    @field_validator("task")
    @classmethod
    def _known_task(cls, task):
        return task if task is None else one_of("procedural task", task, TASKS)

    @field_validator("params")
    @classmethod
    def _task_params(cls, params, info):
        """The task's full parameters, validated and with their defaults, so equal stages key equally."""
        if "task" not in info.data:  # the task itself was refused; that error says why
            return params
        task = info.data["task"]
        if task is None:
            if params:
                raise ValueError("procedural.params is set but procedural.task is not: name a task or drop them")
            return params
        try:
            return get_task(task, params).params()
        except ScarceError as e:
            raise ValueError(str(e)) from None

    @field_validator("transfer")
    @classmethod
    def _groups(cls, transfer):
        if not transfer or len(set(transfer)) != len(transfer):
            raise ValueError(f"name each group at most once and at least one of "
                             f"{', '.join(TRANSFER_GROUPS + TRANSFER_OPTIONAL + TRANSFER_SELECTIONS)}")
        return transfer


class RunConfig(Section):
    name: str = "run"
    runs_dir: Path = Path("runs")
    study: str | None = None  # the sweep, tuning, ensemble or study this run belongs to (set by those commands)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    init: InitConfig = InitConfig()
    distill: DistillConfig = DistillConfig()
    procedural: ProceduralConfig = ProceduralConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.train.batch_size % self.train.grad_accum:
            raise ValueError(
                f"train.batch_size={self.train.batch_size} must be divisible by train.grad_accum={self.train.grad_accum}"
            )
        check_procedural(self)
        return self


def check_procedural(config: RunConfig) -> None:
    """The rules tying the [procedural] section to the rest of a config; a ValueError naming the keys."""
    p = config.procedural
    if config.data.source == "procedural":
        if p.task is None:
            raise ValueError("data.source='procedural' trains on procedural.task's stream: name a task (scarce procedural list)")
        if config.train.tokens is None:
            raise ValueError("data.source='procedural' has no epochs: set train.tokens (the run's length)")
        staged = [k for k in ("tokens", "steps", "fraction", "batch_size") if getattr(p, k) is not None]
        if staged or p.mode != "warmup":
            raise ValueError(f"procedural.{(staged or ['mode'])[0]} describes procedural data added to a natural run; "
                             "with data.source='procedural' the run is the stream itself (its length is train.tokens)")
        return
    if p.task is None:
        given = [k for k in ("tokens", "steps", "batch_size", "fraction") if getattr(p, k) is not None]
        if given:
            raise ValueError(f"procedural.{given[0]} is set but procedural.task is not: name a task or drop it")
        return
    defaults = ProceduralConfig()
    if p.mode == "warmup":
        if (p.tokens is None) == (p.steps is None):
            raise ValueError("procedural.mode='warmup' needs the stage's length: set one of procedural.tokens, procedural.steps")
        if p.fraction is not None:
            raise ValueError("procedural.fraction is mode='mix''s front-loaded share; a warm-up's length is procedural.tokens or .steps")
        if config.init.from_run is not None:
            raise ValueError("a run with a procedural warm-up starts from the warm-up: leave init.from_run unset "
                             "(procedural.transfer names the groups copied)")
        batch = p.batch_size or config.train.batch_size
        if batch % config.train.grad_accum:
            raise ValueError(f"procedural.batch_size={batch} must be divisible by train.grad_accum={config.train.grad_accum}")
        return
    if p.fraction is None:
        raise ValueError("procedural.mode='mix' needs procedural.fraction: the share of training tokens front-loaded, in [0, 1)")
    warmup_only = [k for k in ("tokens", "steps", "batch_size") if getattr(p, k) is not None]
    warmup_only += [k for k in ("transfer", "embedding_init", "optim") if getattr(p, k) != getattr(defaults, k)]
    if warmup_only:
        raise ValueError(f"procedural.{warmup_only[0]} belongs to a warm-up stage; in mode='mix' the procedural batches "
                         "are the run's own (its optimizer and batch size), procedural.fraction of its tokens")
    if config.data.domains is not None:
        raise ValueError("procedural.mode='mix' front-loads into a single corpus's stream; with data.domains use mode='warmup'")


def parse_override(item: str) -> tuple[list[str], Any]:
    """`optim.weight_decay=0.8` → (["optim", "weight_decay"], 0.8). Values are read as TOML, else as strings."""
    if "=" not in item:
        raise ScarceError(f"override {item!r} must look like section.key=value, e.g. optim.weight_decay=0.8")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def resolve_config(base: dict, overrides: list[str] = ()) -> RunConfig:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ScarceError(f"override {item!r}: {key!r} is a value, not a section")
        node[keys[-1]] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ScarceError("invalid config:\n" + format_validation_error(e)) from None


def load_config(path: Path | None, overrides: list[str] = ()) -> RunConfig:
    base: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ScarceError(f"config file {path} does not exist")
        try:
            base = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ScarceError(f"config file {path} is not valid TOML: {e}") from None
    return resolve_config(base, overrides)
