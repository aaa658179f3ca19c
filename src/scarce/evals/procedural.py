"""The data side of a run trained on a procedural stream (data.source = "procedural"): the task's vocabulary
instead of a corpus's, and held-out examples instead of validation documents.

Evaluation scores the loss on the counted targets only (the task's loss mask: output tokens for an
input → output task, every token for a formal language), in nats per token; `val_bpb` is that loss in
bits per token (a procedural token is one symbol; there are no bytes). The examples are fixed for the
run: a diagnostic's 4000 held-out examples (scarce.evals.diagnostics), which its training stream never
emits, plus its accuracy; for any other task, enough examples for data.eval_tokens drawn from a fixed
seed (never one of the stream's, which are seeded by (data seed, step)).
"""

import math
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from scarce.data.procedural.base import Examples, Task
from scarce.data.procedural.source import ProceduralSource
from scarce.data.sources import Batch
from scarce.evals.diagnostics import STOP, ArithmeticTask, DiagnosticTask, accuracy

EVAL_SEED = 20_260_129  # the evaluation examples of a task without a held-out set of its own


class ProceduralData:
    """What the trainer needs of a procedural run's "store": a vocabulary and an evaluation sample."""

    train_token_count = 0  # a stream has no fixed budget of unique tokens

    def __init__(self, task: Task, seq_len: int):
        self.task, self.seq_len = task, seq_len
        self.vocab_size = task.vocab_size

    def eval_sample(self, max_tokens: int | None = None) -> "ProceduralEval":
        if isinstance(self.task, DiagnosticTask):
            examples = self.task.heldout()
        else:
            count = -(-(max_tokens or 65536) // self.task.example_tokens)
            examples = self.task.generate(np.random.default_rng(EVAL_SEED), count)
        return ProceduralEval(self.task, examples, self.seq_len)


class ProceduralEval:
    """Fixed examples of a task, one per row (pack=False), scored with the task's loss mask."""

    def __init__(self, task: Task, examples: Examples, seq_len: int):
        self.task = task
        rows = ProceduralSource(task, seq_len, batch_size=1, steps=0, seed=0, pack=False)
        self.tokens, self.mask = rows._rows(examples)  # (rows, seq_len + 1): long examples cut into windows
        self.scored = isinstance(task, DiagnosticTask) and examples.tokens.shape[1] <= seq_len + 1

    @cached_property
    def batch(self) -> Batch:
        tokens = torch.from_numpy(self.tokens.astype(np.int64))
        mask = torch.from_numpy(np.ascontiguousarray(self.mask[:, 1:]))
        return Batch(tokens[:, :-1], tokens[:, 1:], mask, int(mask.sum()))

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, seq_len: int, batch_size: int, device: torch.device,
                 rank: int = 0, world_size: int = 1) -> dict:
        """val_loss (nats per counted target), val_bpb (bits per counted target), val_tokens; for a
        diagnostic also val_accuracy (examples with every counted target right) and, for arithmetic,
        val_digit_accuracy (answer digits right). Under data parallel each rank scores every
        world_size-th row and the sums are all-reduced."""
        was_training = model.training
        model.eval()
        batch = self.batch
        mine = torch.arange(rank, len(batch.inputs), world_size)
        sums = torch.zeros(6, dtype=torch.float64, device=device)  # loss, targets, exact, examples, digits right, digits
        for chunk in mine.split(batch_size):
            inputs, targets, mask = (t[chunk].to(device) for t in (batch.inputs, batch.targets, batch.loss_mask))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(inputs)
            losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
            sums[0] += losses[mask.flatten()].double().sum()
            sums[1] += mask.sum()
            if self.scored:
                part = Batch(inputs, targets, mask, int(mask.sum()))
                scores = accuracy(logits.argmax(dim=-1), part, self.task) if mask.any() else None
                if scores is not None:
                    digits = int((mask & (targets != STOP)).sum())
                    sums[2:6] += torch.tensor([scores["exact_match"] * scores["examples"], scores["examples"],
                                               scores.get("digit_accuracy", 0.0) * digits, digits], dtype=torch.float64, device=device)
        if world_size > 1:
            torch.distributed.all_reduce(sums)
        model.train(was_training)
        loss = (sums[0] / sums[1]).item()
        result = {"val_loss": loss, "val_bpb": loss / math.log(2), "val_tokens": int(sums[1].item())}
        if self.scored:
            result["val_accuracy"] = (sums[2] / sums[3]).item()
            if isinstance(self.task, ArithmeticTask):
                result["val_digit_accuracy"] = (sums[4] / sums[5]).item()
        return result
