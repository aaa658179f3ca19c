"""The objective seam: how (model, batch) becomes a loss.

An objective turns a micro-batch into one or more forward passes. `passes(batch)` returns functions of the
model, each giving `(loss_sum, ntp_sum)`: `loss_sum` is what that pass backpropagates, summed (not
averaged) over the positions whose loss counts; `ntp_sum` is the plain next-token part of it, for the
`train_loss` the trainer logs (None when the pass has none). The trainer divides by the global batch's
counted positions, so a step's loss is a mean over the global batch whatever the micro-batching or the
process layout. Passes are backpropagated one after another, so one pass's activations are alive at a
time. A source's loss mask restricts every objective's loss to its positions. `logged(objective, ntp)`
turns a step's two global means into what the metrics record beside `train_loss`.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scarce import runs
from scarce.config import ObjectiveConfig, RunConfig
from scarce.data.batch import Batch
from scarce.errors import ScarceError

# MIR's execution when objective.mir_execution = "auto": the cheaper one per step, as measured by
# benchmarks/bench_mir.py (benchmarks/results/mir.json). CUDA has not been measured; one pass over the
# doubled batch keeps a GPU busier, at twice the activation memory of a pass.
MIR_EXECUTION_BY_DEVICE = {"cpu": "two_pass", "cuda": "concatenated"}


def counted_positions(loss_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The flat indices of the positions whose loss counts (None: all of them), for the model's `positions`."""
    return None if loss_mask is None else loss_mask.flatten().nonzero().squeeze(1)


def token_loss_sum(model, inputs: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor | None) -> torch.Tensor:
    """Summed next-token cross-entropy over the positions that count.

    With a loss mask the model computes its output head only at the counted positions (model.forward's
    `positions`), so the head and the loss cost nothing where nothing is counted."""
    positions = counted_positions(loss_mask)
    logits = model(inputs) if positions is None else model(inputs, positions)
    counted_targets = targets.flatten() if positions is None else targets.flatten().index_select(0, positions)
    return F.cross_entropy(logits.flatten(0, -2), counted_targets, reduction="sum")


class NextToken:
    """Plain next-token prediction."""

    flops_multiplier = 1  # training FLOPs per token, relative to one forward and backward pass

    def passes(self, batch: Batch):
        def ntp(model):
            loss = token_loss_sum(model, batch.inputs, batch.targets, batch.loss_mask)
            return loss, loss

        return [ntp]

    def logged(self, objective: float, ntp: float) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MaskedInput:
    """Masked-input regularization (Xu et al. 2026): L = L_NTP(x) + λ · L_NTP(mask_r(x)).

    Per sequence r ~ U(mask_ratio_min, mask_ratio_max); every input position from `protected_prefix` on is
    replaced by the mask token with probability r. The mask token is the first input-only token (id =
    vocab_size, its own embedding row, never a target). Targets stay clean, attention stays causal, both
    terms are means over the same positions. Evaluation never calls this, so inference is untouched.

    Masks come from their own generator, reseeded for every micro-batch from (run seed, rank, micro-batches
    masked so far): MIR consumes nothing of the data order or the model's RNG, and the counter, saved in
    checkpoints, makes a resumed run draw exactly the masks it would have drawn.
    """

    flops_multiplier = 2  # the masked copy costs a second forward and backward pass

    def __init__(self, cfg: ObjectiveConfig, vocab_size: int, seed: int, rank: int = 0, execution: str = "two_pass"):
        self.weight, self.ratio_min, self.ratio_max = cfg.mir_weight, cfg.mask_ratio_min, cfg.mask_ratio_max
        self.protected_prefix, self.mask_token = cfg.protected_prefix, vocab_size
        self.seed, self.rank, self.execution = seed, rank, execution
        self.batches_masked = 0

    def mask(self, inputs: torch.Tensor) -> torch.Tensor:
        """Which input positions of this micro-batch are masked (bool, like inputs); advances the counter."""
        entropy = np.random.SeedSequence([self.seed, self.rank, self.batches_masked]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(entropy))
        self.batches_masked += 1
        rows, length = inputs.shape
        ratio = self.ratio_min + (self.ratio_max - self.ratio_min) * torch.rand(rows, 1, generator=generator)
        masked = torch.rand(rows, length, generator=generator) < ratio
        masked[:, : self.protected_prefix] = False
        return masked.to(inputs.device)

    def passes(self, batch: Batch):
        masked_inputs = torch.where(self.mask(batch.inputs), self.mask_token, batch.inputs)

        def clean(model):
            loss = token_loss_sum(model, batch.inputs, batch.targets, batch.loss_mask)
            return loss, loss

        def masked(model):
            return self.weight * token_loss_sum(model, masked_inputs, batch.targets, batch.loss_mask), None

        def concatenated(model):  # one pass over [clean; masked] rows: the same sums, one bigger matmul each
            targets = torch.cat([batch.targets, batch.targets]).flatten()
            positions = counted_positions(None if batch.loss_mask is None else torch.cat([batch.loss_mask, batch.loss_mask]))
            inputs = torch.cat([batch.inputs, masked_inputs])
            logits = model(inputs) if positions is None else model(inputs, positions)
            counted_targets = targets if positions is None else targets.index_select(0, positions)
            losses = F.cross_entropy(logits.flatten(0, -2), counted_targets, reduction="none")
            clean_sum, masked_sum = losses.view(2, -1).sum(dim=1)  # the counted positions of the clean rows come first
            return clean_sum + self.weight * masked_sum, clean_sum

        return [clean, masked] if self.execution == "two_pass" else [concatenated]

    def logged(self, objective: float, ntp: float) -> dict:
        """The combined loss and the masked pass's own loss (a mean over the same positions), as the
        reference logs them beside the clean one."""
        return {"train_combined_loss": objective, "train_masked_loss": (objective - ntp) / self.weight if self.weight else None}

    def state_dict(self) -> dict:
        return {"batches_masked": self.batches_masked}

    def load_state_dict(self, state: dict) -> None:
        self.batches_masked = state["batches_masked"]


class TokenDistillation:
    """Token-level distillation: L = (1 − weight) · NTP + weight · KL(p_teachers ‖ p_student), per position.

    p_teachers is the teachers' averaged next-token distribution (softmax of their mean logits, as an
    ensemble predicts); the teachers run in eval mode without gradients on the same real batch. The KL is
    summed over the vocabulary and, like the NTP term, over the positions that count.
    """

    def __init__(self, weight: float, teachers: list, student_train_flops_per_token: int):
        self.weight, self.teachers = weight, teachers
        # a teacher forward pass is a third of a forward and backward pass
        teacher_flops = sum(t.shape.train_flops_per_token() for t in teachers) / 3
        self.flops_multiplier = 1 + teacher_flops / student_train_flops_per_token

    def passes(self, batch: Batch):
        from scarce.evals.combine import ensemble_log_probs

        def distill(model):
            log_probs = F.log_softmax(model(batch.inputs).float(), dim=-1)
            teacher = ensemble_log_probs(self.teachers, batch.inputs)
            ntp = F.nll_loss(log_probs.flatten(0, 1), batch.targets.flatten(), reduction="none")
            kl = F.kl_div(log_probs, teacher, log_target=True, reduction="none").sum(dim=-1).flatten()
            if batch.loss_mask is not None:
                ntp, kl = ntp * batch.loss_mask.flatten(), kl * batch.loss_mask.flatten()
            return (1 - self.weight) * ntp.sum() + self.weight * kl.sum(), ntp.sum()

        return [distill]

    def logged(self, objective: float, ntp: float) -> dict:
        return {"train_combined_loss": objective}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def token_distillation(config, shape, device) -> TokenDistillation:
    """The objective of a run with distill.kind = "token": its teachers loaded on `device`, checked to
    share the student's data section (hence its token store and tokenizer) and to read its context."""
    from scarce.evals.ensemble import check_same_data
    from scarce.evals.run import load_run_model

    if config.objective.kind != "ntp":
        raise ScarceError(f"distill.kind='token' mixes KL with plain next-token loss; "
                          f"objective.kind={config.objective.kind!r} must be 'ntp'")
    teachers = []
    for run_dir in config.distill.teachers:
        check_same_data([(Path("the student"), config), (Path(run_dir), RunConfig.model_validate(runs.read_config(run_dir)))],
                        what="a teacher and its student")
        with torch.random.fork_rng(devices=[]):  # building a teacher must not move the student's init RNG
            _, model, _, _ = load_run_model(Path(run_dir))
        if model.shape.seq_len < shape.seq_len:
            raise ScarceError(f"teacher {run_dir} reads {model.shape.seq_len} tokens, the student {shape.seq_len}: lower model.seq_len")
        teachers.append(model.to(device).eval().requires_grad_(False))
    return TokenDistillation(config.distill.weight, teachers, shape.train_flops_per_token())


def build_objective(config: RunConfig, shape, rank: int, device: torch.device):
    """The run's objective: token distillation when distill.kind = "token", else objective.kind (NTP or MIR)."""
    if config.distill.kind == "token":  # KL to the teachers' averaged distribution, mixed with NTP
        return token_distillation(config, shape, device)
    if config.objective.kind == "ntp":
        return NextToken()
    cfg = config.objective
    execution = MIR_EXECUTION_BY_DEVICE[device.type] if cfg.mir_execution == "auto" else cfg.mir_execution
    return MaskedInput(cfg, shape.vocab_size, config.train.seed, rank, execution)
