"""Evidence: does a Dyck warm-up of the haystack model's shape learn to match brackets?

The paper credits the haystack jump to what a Dyck warm-up puts in attention: a close bracket's type is the
innermost open bracket's, which a head must find. This trains warm-ups of the diagnostic model (2 layers,
4 heads, width 16; `scarce diagnose warmup dyck`) under several recipes and probes each on fresh k-Dyck rows:
where the next token closes a bracket opened *before* the current token (the current token's own type is
in its residual stream, no attention needed), how often the model predicts the close's type, and the
weight the best head puts on the bracket being closed (uniform attention's weight beside it).

    python evidence/dyck_warmup.py run [--runs-dir runs/evidence-dyck-warmup] [--recipes default gpt2 ...]
    python evidence/dyck_warmup.py probe [--runs-dir ...] [--out docs/evidence/dyck_warmup.json]

Not part of the tests.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from haystack import DYCK, attention_weights

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.evals.run import load_run_model
from scarce.procedural.dyck import Dyck
from scarce.studies.diagnose import diagnostic_config
from scarce.train.trainer import train

GPT2 = ["model.block='gpt2'", "model.positions='learned'", "model.qk_norm=false", "optim.beta2=0.999"]
# name → (Dyck params, steps, rows per step, overrides): the haystack's recipe (lr 1e-3 cosine, 500 warm-up
# steps' worth of fraction, weight decay 0.001) unless overridden
RECIPES = {
    "default": (DYCK, 1000, 1000, []),  # what evidence/haystack.py's Dyck arms start from
    "no-qk-norm": (DYCK, 1000, 1000, ["model.qk_norm=false"]),
    "gpt2": (DYCK, 1000, 1000, GPT2),
    "gpt2-3000-steps": (DYCK, 3000, 1000, GPT2),
    # the reference's Dyck script defaults (k 16, 128 tokens, batch 64, lr 5e-5 constant, weight decay 0.01,
    # dropout 0.1, here scarce's on the attention output); its step count is not given: 10,000 steps
    # (81M tokens, more than the 1,000 x 1,000 x 63 above)
    "reference-script": ({**DYCK, "length": 128}, 10000, 64,
                         [*GPT2, "model.dropout=0.1", "optim.lr=5e-5", "optim.schedule='constant'",
                          "optim.warmup_fraction=0.0", "optim.weight_decay=0.01"]),
    "k4": ({**DYCK, "k": 4}, 1000, 1000, []),  # fewer bracket types than the width's 16 dimensions
}


def run(runs_dir: Path, recipes: list[str], seed: int = 0) -> None:
    torch.set_num_threads(1)
    for name in recipes:
        params, steps, batch, overrides = RECIPES[name]
        if any(runs_dir.glob(f"warmup-{name}-s{seed}-*/summary.json")):
            continue
        train(diagnostic_config("dyck", params, steps=steps, batch_size=batch, seed=seed, runs_dir=runs_dir,
                                name=f"warmup-{name}-s{seed}", overrides=overrides), progress=False)


def probe(run_dir: Path, examples: int = 1000) -> dict:
    config, model, _, checkpoint = load_run_model(run_dir)
    task = Dyck(**{k: v for k, v in config.procedural.params.items() if k in ("k", "length")})
    tokens = torch.from_numpy(np.asarray(task.generate(np.random.default_rng(12345), examples).tokens).astype("int64"))
    weights = attention_weights(model, tokens[:, :-1])
    with torch.no_grad():
        logits = model(tokens[:, :-1])
    k = task.k
    queries, opened, bag = [], [], []  # (row, position) before a close; the position of the bracket it closes
    for b, row in enumerate(tokens.tolist()):
        stack = []
        for t, token in enumerate(row[:-1]):
            if token < k:
                stack.append(t)
            else:
                stack.pop()
            if row[t + 1] >= k and stack:
                queries.append((b, t))
                opened.append(stack[-1])
                bag.append(1 / len({row[i] for i in stack}))  # a uniform guess among the unmatched types
    b, t = torch.tensor(queries).T
    opened = torch.tensor(opened)
    right = logits[b, t, k:2 * k].argmax(-1) + k == tokens[b, t + 1]
    deeper = opened < t  # the bracket closed is not the current token
    by_layer = [w[b[deeper], :, t[deeper], opened[deeper]].mean(0).tolist() for w in weights]  # per head
    summary = runs.read_summary(run_dir)
    return {"checkpoint": checkpoint.name, "steps": summary["steps"], "final_val_loss": summary["final_val_loss"],
            "params": config.procedural.params, "model": config.model.model_dump(), "optim": config.optim.model_dump(),
            "batch_size": config.train.batch_size, "closes": len(queries), "closes_deeper": int(deeper.sum()),
            "close_type_accuracy_own_token": float(right[~deeper].float().mean()),
            "close_type_accuracy_deeper": float(right[deeper].float().mean()),
            "chance_deeper": 1 / k,
            # what counting alone gets: the open types still unmatched, their order ignored (attention
            # that averages the context can compute this; matching the innermost bracket needs more)
            "unmatched_types_guess_deeper": float(torch.tensor(bag)[deeper].mean()),
            "to_the_bracket_closed_by_layer": by_layer,
            "best_head_to_the_bracket_closed": max(max(layer) for layer in by_layer),
            "uniform_to_the_bracket_closed": float((1 / (t[deeper] + 1).float()).mean())}


def table(result: dict) -> str:
    lines = ["| warm-up | steps × rows | final val loss | close type right, bracket opened earlier (chance; "
             "a guess among the unmatched types) | best head's weight on it (uniform) |", "| --- | --- | --- | --- | --- |"]
    for name, r in result.items():
        lines.append(f"| {name} | {r['steps']:,} × {r['batch_size']:,} | {r['final_val_loss']:.3f} | "
                     f"{r['close_type_accuracy_deeper']:.1%} ({r['chance_deeper']:.1%}; "
                     f"{r['unmatched_types_guess_deeper']:.1%}) | "
                     f"{r['best_head_to_the_bracket_closed']:.3f} ({r['uniform_to_the_bracket_closed']:.3f}) |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["run", "probe"])
    parser.add_argument("--runs-dir", type=Path, nargs="+", default=[Path("runs/evidence-dyck-warmup")])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--out", type=Path, default=Path("docs/evidence/dyck_warmup.json"))
    args = parser.parse_args()
    if args.what == "run":
        run(args.runs_dir[0], args.recipes)
        return
    finished = [d for r in args.runs_dir for d in sorted(r.glob("warmup-*")) if runs.read_summary(d)["status"] == "completed"]
    result = {d.name: probe(d) for d in finished}
    write_json_atomic(args.out, result)
    args.out.with_suffix(".table.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
