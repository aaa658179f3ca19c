"""The lm-eval model `scarce`: one run, or an ensemble of runs whose logits are averaged.

    lm_eval.simple_evaluate(model="scarce", model_args="run=runs/a", tasks=[...])
    model_args="run=runs/a:runs/b"   an ensemble: log-softmax of the mean of the members' logits

Text is tokenized with the runs' own tokenizer; a sequence that starts a text is conditioned on
<|endoftext|>, which in scarce's token store ends the document before. Sequences longer than the context
are scored in sliding windows: every scored token is scored once, and each window is a full context, so
a token sees at least `seq_len - rolling_stride + 1` tokens before it (all of them near the start).
`rolling_stride=1` gives every token the whole context (one window per token); `rolling_stride=seq_len`
is lm-eval's `hf` model's scheme. Generation is greedy.
"""

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from scarce.errors import ScarceError
from scarce.evals.harness import require_lm_eval

require_lm_eval()
from lm_eval.api.model import TemplateLM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402
from tqdm import tqdm  # noqa: E402  (lm-eval's own progress bars)

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKENS = 256


def windows(n_tokens: int, first: int, seq_len: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """Windows that score tokens[first:n_tokens], each conditioned on the tokens before it.

    Yields (start, end, scored_from): the model reads tokens[start:end-1] (at most seq_len) and scores
    positions scored_from..end-1. Windows after the first move on by `stride` and end as late as fits, so
    every position is scored once, and with at least seq_len - stride + 1 tokens of context (or all).
    """
    if not 1 <= stride <= seq_len:
        raise ScarceError(f"rolling_stride must be between 1 and the context length {seq_len}, got {stride}")
    if first < 1:
        raise ValueError("the first scored token needs a token before it")
    position = first
    while position < n_tokens:
        # while the whole history still fits, score everything that fits in one window
        end = min(n_tokens, max(seq_len + 1, position + stride))
        yield max(0, end - 1 - seq_len), end, position
        position = end


def _parse_runs(run) -> list[Path]:
    if isinstance(run, (list, tuple)):
        parts = [str(r) for r in run]
    else:
        parts = [p for p in str(run).split(os.pathsep) if p]
    if not parts:
        raise ScarceError("model_args: give run=RUN_DIR (several, for an ensemble, separated by ':')")
    return [Path(p) for p in parts]


def _device(requested: str | None) -> torch.device:
    # lm-eval's command line asks for cuda:0 unless told otherwise; like its `hf` model, fall back to the CPU
    if requested is None or (str(requested).startswith("cuda") and not torch.cuda.is_available()):
        if requested is not None:
            logging.getLogger(__name__).warning("device %s is not available; using the CPU", requested)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _batch_size(value) -> int:
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        return DEFAULT_BATCH_SIZE  # no memory probing: a fixed, modest batch
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ScarceError(f"batch_size must be a positive integer, got {value!r}") from None
    if size < 1:
        raise ScarceError(f"batch_size must be a positive integer, got {value!r}")
    return size


@register_model("scarce")
class ScarceLM(TemplateLM):
    """A scarce run (or ensemble of runs) as an lm-eval language model."""

    def __init__(
        self,
        run,
        batch_size=DEFAULT_BATCH_SIZE,
        device: str | None = None,
        rolling_stride: int | None = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKENS,
        max_batch_size=None,  # lm-eval passes it; batches here are fixed
        **unknown,
    ):
        super().__init__()
        if unknown:
            raise ScarceError(
                f"unknown scarce model_args: {', '.join(sorted(unknown))}; "
                "known: run, batch_size, device, rolling_stride, max_gen_toks"
            )
        from scarce.evals.run import load_run_model  # heavy imports only once a model is asked for

        self.run_dirs = _parse_runs(run)
        self._device = _device(device)
        self.batch_size = _batch_size(batch_size)
        self.max_gen_toks = int(max_gen_toks)
        self.members, self.checkpoints = [], []
        for run_dir in self.run_dirs:
            _, model, store, checkpoint = load_run_model(run_dir)
            tokenizer = store.tokenizer
            if self.members and tokenizer.fingerprint != self.tokenizer.fingerprint:
                raise ScarceError(
                    f"{run_dir} uses a different tokenizer from {self.run_dirs[0]}; "
                    "an ensemble's members must share one tokenizer"
                )
            if self.members and model.head.out_features != self.members[0].head.out_features:
                raise ScarceError(f"{run_dir} predicts a different vocabulary from {self.run_dirs[0]}")
            self.tokenizer = tokenizer
            self.members.append(model.to(self._device).eval())
            self.checkpoints.append(str(checkpoint))
        self.max_length = min(m.shape.seq_len for m in self.members)
        self.rolling_stride = int(rolling_stride) if rolling_stride is not None else max(1, self.max_length // 2)
        if not 1 <= self.rolling_stride <= self.max_length:
            raise ScarceError(
                f"rolling_stride must be between 1 and the context length {self.max_length}, got {self.rolling_stride}"
            )

    # ---- what TemplateLM needs ----
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eot_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string)  # scarce adds no special tokens to text

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def get_model_info(self) -> dict:
        return {"scarce_runs": [str(d) for d in self.run_dirs], "scarce_checkpoints": self.checkpoints}

    # ---- the model ----
    @torch.no_grad()
    def log_probs(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens → (B, T, vocab) next-token log-probabilities: log-softmax of the members' mean logits."""
        from scarce.evals.combine import ensemble_log_probs

        return ensemble_log_probs(self.members, rows.to(self._device))

    def _padded_batches(self, sequences: list[list[int]]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Batches of (indices, right-padded rows), longest first. Padding sits after every real token, so
        a causal model's outputs at real positions do not see it."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        for i in range(0, len(order), self.batch_size):
            chosen = order[i : i + self.batch_size]
            width = len(sequences[chosen[0]])
            rows = torch.full((len(chosen), width), self.eot_token_id, dtype=torch.long)
            for row, index in enumerate(chosen):
                rows[row, : len(sequences[index])] = torch.tensor(sequences[index], dtype=torch.long)
            yield chosen, rows

    def score(self, sequences: list[tuple[list[int], int]], disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        """For each (tokens, first): log P(tokens[first:] | tokens[:first]) and whether greedy decoding gives it."""
        pieces = []  # (sequence index, window input, targets, offset of the first target in the window)
        for index, (tokens, first) in enumerate(sequences):
            for start, end, scored_from in windows(len(tokens), first, self.max_length, self.rolling_stride):
                pieces.append((index, tokens[start : end - 1], tokens[scored_from:end], scored_from - 1 - start))
        logprob = [0.0] * len(sequences)
        greedy = [True] * len(sequences)
        batches = list(self._padded_batches([piece[1] for piece in pieces]))
        for chosen, rows in tqdm(batches, disable=disable_tqdm, desc="scoring windows"):
            log_probs = self.log_probs(rows)
            for row, p in enumerate(chosen):
                index, _, targets, offset = pieces[p]
                window = log_probs[row, offset : offset + len(targets)]
                targets = torch.tensor(targets, device=window.device)
                logprob[index] += window.gather(-1, targets[:, None]).sum().item()
                greedy[index] &= bool((window.argmax(-1) == targets).all())
        return list(zip(logprob, greedy))

    # ---- lm-eval's request types ----
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        sequences = [(context + continuation, len(context)) for _, context, continuation in requests]
        results = self.score(sequences, disable_tqdm)
        for (key, _, _), result in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [request.args[0] for request in requests]
        sequences = [([self.prefix_token_id, *self.tok_encode(text)], 1) for text in texts]
        results = [logprob for logprob, _ in self.score(sequences, disable_tqdm)]
        for text, result in zip(texts, results):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), result)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy decoding of every request together, each until a stop string, <|endoftext|> or its token limit."""
        prompts, stops, limits = [], [], []
        for request in requests:
            context, gen_kwargs = request.args
            gen_kwargs = dict(gen_kwargs or {})
            if gen_kwargs.pop("do_sample", False) or gen_kwargs.pop("temperature", 0.0):
                raise ScarceError("the scarce lm-eval model decodes greedily only; set do_sample=false, temperature=0")
            until = gen_kwargs.pop("until", None) or []
            stops.append([s for s in ([until] if isinstance(until, str) else until) if s])
            limits.append(int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks)))
            prompts.append(self.tok_encode(context) or [self.prefix_token_id])
        generated = [[] for _ in requests]
        active = [i for i in range(len(requests)) if limits[i] > 0]
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="generating")
        while active:
            inputs = [(prompts[i] + generated[i])[-self.max_length :] for i in active]
            finished = []
            for chosen, rows in self._padded_batches(inputs):
                log_probs = self.log_probs(rows)
                for row, j in enumerate(chosen):
                    i = active[j]
                    token = int(log_probs[row, len(inputs[j]) - 1].argmax())
                    if token == self.eot_token_id:
                        finished.append(i)
                        continue
                    generated[i].append(token)
                    text = self.tok_decode(generated[i])
                    if len(generated[i]) >= limits[i] or any(stop in text for stop in stops[i]):
                        finished.append(i)
            active = [i for i in active if i not in set(finished)]
            progress.update(len(finished))
        progress.close()
        results = []
        for request, tokens, stop_strings in zip(requests, generated, stops):
            text = self.tok_decode(tokens)
            for stop in stop_strings:
                text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", request.args, text)
            results.append(text)
        return results
