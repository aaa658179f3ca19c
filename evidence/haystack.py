"""Evidence: the needle-in-a-haystack diagnostic at the paper's protocol (Jiang, Shinnick et al. 2026).

The tiny model (2 layers, 4 heads, width 16) on the haystack stream, 10,000 steps of 1,000 examples,
lr 1e-3 cosine with 500 warm-up steps, weight decay 0.001 (`scarce diagnose haystack`'s defaults), scored
on the 4,000 held-out examples every 250 steps. Arms, in this order: from scratch; after a k-Dyck warm-up;
after the shuffled-Dyck control (the warm-up's tokens shuffled within each sequence). A warm-up is
`scarce diagnose warmup dyck`'s defaults (1,000 steps of 1,000 rows, the same recipe) on k = 16 Dyck
examples of 64 tokens (one per row); the haystack run then copies attention, MLP and norms and sets
every input-embedding and output-head row to the warm-up's mean embedding row (the reference's
`everything` transfer with `average` embedding init).

    python evidence/haystack.py run [--runs-dir runs/evidence-haystack] [--seeds 0] [--steps 10000] [--arms scratch dyck ...]
                                    [--positions learned] [--set model.qk_norm=false ...]
    python evidence/haystack.py collect [--runs-dir DIR ...] [--out docs/evidence/procedural_haystack.json] [--earlier OLD.json]
    python evidence/haystack.py attention [--runs-dir DIR ...] [--out docs/evidence/procedural_haystack.json]

`run` trains the arms one after another (each run's metrics.jsonl holds its accuracy curve as it goes);
`collect` reads whatever the runs have written so far, finished or not, and writes the JSON and a plot
(the same name, .png) with the fraction of the protocol each arm reached. Not part of the tests.
"""

import argparse
import json
from pathlib import Path

import torch

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.config import TRANSFER_GROUPS
from scarce.report import plt, save_figure
from scarce.studies.diagnose import (
    HAYSTACK_CHANCE,
    PAPER_BATCH,
    PAPER_HAYSTACK,
    PAPER_STEPS,
    diagnostic_config,
)
from scarce.train.trainer import train

EVAL_EVERY = 250
DYCK = {"k": 16, "length": 64}
WARMUP_STEPS = 1000
ARMS = {"scratch": None, "dyck": DYCK, "shuffled dyck": {**DYCK, "shuffled": True}}
INDEX = "arms.json"  # arm and seed → run directory, written as each run starts


def run(runs_dir: Path, seeds: list[int], steps: int, arms: list[str], warmup_steps: int = WARMUP_STEPS,
        positions: str = "rope", sets: tuple[str, ...] = ()) -> None:
    """`positions` "learned": both the warm-up and the haystack model use learned absolute positions (the
    reference's GPT-2 wpe), and the warm-up's are transferred with attention, MLP and norms, as the
    reference's `everything` transfer copies wpe from a warm-up at least as long as the haystack rows.
    `sets`: config overrides (e.g. model.qk_norm=false) for both the warm-up and the haystack run, named in
    the arm's key and its runs' names."""
    torch.set_num_threads(1)
    runs_dir.mkdir(parents=True, exist_ok=True)
    index_path = runs_dir / INDEX
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    learned = positions == "learned"
    model = (["model.positions='learned'"] if learned else []) + list(sets)
    tag = ("-learned" if learned else "") + "".join(f"-{key.split('.')[-1]}-{value.strip(chr(34) + chr(39))}"
                                                  for key, value in (item.split("=", 1) for item in sets))
    variant = ", ".join((["learned positions"] if learned else []) + list(sets))
    for seed in seeds:
        for arm in arms:
            warmup_params, key = ARMS[arm], f"{arm}{f' ({variant})' if variant else ''}/seed{seed}"
            if key in index:
                continue
            warmup = None
            if warmup_params is not None:
                warmup = train(diagnostic_config("dyck", warmup_params, steps=warmup_steps, seed=seed, runs_dir=runs_dir,
                                                 name=f"warmup-{arm.replace(' ', '-')}{tag}-s{seed}", overrides=model),
                               progress=False)
            config = diagnostic_config("haystack", steps=steps, seed=seed, warmup=warmup, runs_dir=runs_dir,
                                       name=f"haystack-{arm.replace(' ', '-')}{tag}-s{seed}",
                                       transfer=[*TRANSFER_GROUPS, "positions"] if learned and warmup else None,
                                       overrides=[f"train.eval_every={EVAL_EVERY}", *model]
                                       + (["init.embedding_init='mean'"] if warmup else []))
            # the run directory is known once training starts: record it from the run's own name afterwards
            index[key] = {"pending": config.name, "warmup": str(warmup) if warmup else None}
            write_json_atomic(index_path, index)
            index[key]["run"] = str(train(config, progress=False))
            write_json_atomic(index_path, index)


def _run_dir(runs_dir: Path, entry: dict) -> Path | None:
    if "run" in entry:
        return Path(entry["run"])
    started = sorted(runs_dir.glob(f"{entry['pending']}-*"))  # the run in progress
    return started[-1] if started else None


def collect(runs_dirs: list[Path], out: Path, earlier: Path | None = None) -> dict:
    """`earlier`: a JSON an earlier collect wrote, whose arms (their run directories gone) are carried over,
    each labelled with its warm-up length and "earlier"."""
    arms, warmups = {}, {}
    for warmup_dir in sorted(p for d in runs_dirs for p in d.glob("warmup-*") if p.is_dir()):  # finished or not
        logged = [r["step"] for r in runs.read_metrics(warmup_dir) if "step" in r]
        warmups[warmup_dir.name] = {"steps_done": max(logged, default=0), "steps_total": runs.read_summary(warmup_dir)["steps_total"],
                                    "status": runs.read_summary(warmup_dir)["status"]}
    indexed = [(d, k, e) for d in runs_dirs if (d / INDEX).exists() for k, e in json.loads((d / INDEX).read_text()).items()]
    for runs_dir, key, entry in indexed:
        run_dir = _run_dir(runs_dir, entry)
        if run_dir is None:
            continue
        curve = [(r["step"], r["val_accuracy"]) for r in runs.read_metrics(run_dir) if "val_accuracy" in r]
        summary = runs.read_summary(run_dir)
        steps_total = summary["steps_total"]
        reached = curve[-1][0] if curve else 0
        trained = max((r["step"] for r in runs.read_metrics(run_dir) if "step" in r), default=0)
        arms[key] = {
            "run": run_dir.name, "status": summary["status"], "warmup": Path(entry["warmup"]).name if entry["warmup"] else None,
            "warmup_steps": runs.read_summary(Path(entry["warmup"]))["steps"] if entry["warmup"] else None,
            "steps_total": steps_total, "steps_trained": trained, "steps_evaluated": reached,
            "fraction_of_protocol": reached / PAPER_STEPS,
            "final_accuracy": curve[-1][1] if curve else None,
            "first_step_at_or_above": {str(level): next((s for s, a in curve if a >= level), None) for level in (0.5, 0.9)},
            "curve": [{"step": s, "accuracy": a} for s, a in curve],
        }
    if earlier is not None:
        kept = json.loads(earlier.read_text())
        for key, arm in kept["arms"].items():
            if arm["run"] not in {a["run"] for a in arms.values()}:
                steps = f", {arm['warmup_steps']:,}-step warm-up" if arm["warmup_steps"] else ""
                arms[key if "(earlier" in key else f"{key} (earlier{steps})"] = arm  # labelled once
        warmups.update({k: w for k, w in kept["warmups"].items() if k not in warmups})
    result = {
        "protocol": {"steps": PAPER_STEPS, "batch": PAPER_BATCH, "model": "2 layers, 4 heads, width 16",
                     "optim": "lr 1e-3 cosine, 500 warm-up steps, weight decay 0.001", "eval_every": EVAL_EVERY,
                     "heldout_examples": 4000, "warmup": {"task": "dyck", "params": DYCK, "steps": WARMUP_STEPS,
                                                          "batch": PAPER_BATCH}},
        "paper": PAPER_HAYSTACK, "chance": HAYSTACK_CHANCE, "arms": arms, "warmups": warmups,
    }
    if earlier is not None:  # the earlier attention probes (their runs may be gone)
        result |= {key: kept[key] for key in ("attention", "rope_previous_token_margin") if key in kept}
    write_json_atomic(out, result)
    out.with_suffix(".table.md").write_text(tables(result))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (key, arm) in enumerate(arms.items()):
        ax.plot([p["step"] for p in arm["curve"]], [p["accuracy"] for p in arm["curve"]], color=f"C{i}", marker="o",
                markersize=2, linestyle="--" if "earlier" in key else "-",
                label=f"{key} ({arm['fraction_of_protocol']:.0%} of the protocol)")
    for (arm, accuracy), (x, va) in zip(PAPER_HAYSTACK.items(), [(1.0, "bottom"), (1.0, "bottom"), (0.6, "top")]):
        ax.axhline(accuracy, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"paper, {arm}: {accuracy:.1%}", (x * PAPER_STEPS, accuracy), ha="right", va=va, fontsize=7)
    for label, accuracy in HAYSTACK_CHANCE.items():
        ax.axhline(accuracy, color="black", linestyle="--", linewidth=0.8)
        ax.annotate(f"chance, {label}: {accuracy:.1%}", (0, accuracy), ha="left", va="bottom", fontsize=7)
    ax.set_xlim(0, PAPER_STEPS)
    ax.set_ylim(0, 1)
    ax.set_xlabel("haystack training step (the paper's protocol: 10,000)")
    ax.set_ylabel("accuracy on the 4,000 held-out examples")
    ax.legend(fontsize=7, loc="center right")
    save_figure(fig, out.with_suffix(".png"))
    return result


def attention_weights(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's causal attention weights on `tokens`, (B, H, T, T), recomputed from the block's input."""
    from scarce.model import apply_rope

    weights = []

    def capture(attn):
        def hook(module, args, x):
            B, T, C = x.shape
            q, k, _ = attn.qkv(x).view(B, T, 3, attn.n_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            cos, sin = model.rope_cos[:T], model.rope_sin[:T]
            q, k = apply_rope(attn.q_norm(q), cos, sin), apply_rope(attn.k_norm(k), cos, sin)
            scores = (q @ k.transpose(-1, -2)) / attn.head_dim ** 0.5
            weights.append(scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1))
        return hook

    model.eval()  # no dropout
    hooks = [block.attn_norm.register_forward_hook(capture(block.attn)) for block in model.blocks]
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    return weights


def attention(run_dir: Path, examples: int = 1000) -> dict:
    """What the run's attention does on held-out haystack rows (its newest checkpoint): per layer, the head
    with the most weight (a) from each value to the token just before it, its key (a previous-token head,
    the first half of an induction circuit) and (b) from the query to the queried pair's value and key
    positions (the retrieval the task needs). Means over the rows' positions; uniform attention over a row's
    context gives `uniform_at_a_value` and `uniform_at_the_query` (the means of 1/(position + 1))."""
    from scarce.evals.run import load_run_model
    from scarce.procedural.diagnostics import QUERY_BASE, Haystack

    _, model, _, checkpoint = load_run_model(run_dir)
    heldout = Haystack().heldout()
    tokens = torch.from_numpy(heldout.tokens[:examples, :-1].astype("int64"))  # the model's input: all but the target
    weights = attention_weights(model, tokens)
    at = (tokens >= QUERY_BASE).int().argmax(1)  # the query's position, 2·pairs
    rows = torch.arange(len(tokens))
    asked = tokens[rows, at] - QUERY_BASE + 128
    key_at = (tokens[:, : 2 * 30 : 2] == asked[:, None]).int().argmax(1) * 2  # the queried key's position
    value = torch.arange(tokens.shape[1])[None, :]
    is_value = (value % 2 == 1) & (value < at[:, None])
    layers = []
    for w in weights:  # (B, H, T, T), one per layer
        previous = torch.diagonal(w, offset=-1, dim1=-2, dim2=-1)  # (B, H, T-1): weight of t on t-1, for t >= 1
        prev_at_values = (previous * is_value[:, None, 1:]).sum((0, 2)) / is_value.sum()
        to_value = w[rows, :, at, key_at + 1].mean(0)
        to_key = w[rows, :, at, key_at].mean(0)
        layers.append({"previous_token_at_values_by_head": prev_at_values.tolist(),
                       "query_to_queried_value_by_head": to_value.tolist(),
                       "query_to_queried_key_by_head": to_key.tolist()})
    return {"checkpoint": checkpoint.name, "examples": examples, "layers": layers,
            "uniform_at_a_value": float((is_value / (value + 1)).sum() / is_value.sum()),
            "uniform_at_the_query": float((1 / (at + 1)).float().mean())}


def rope_previous_token_margin(head_dim: int, theta: float, context: int = 62, grid: int = 121) -> float:
    """How sharply one rotary head of `head_dim` can single out the previous token, position alone: the
    score of a key Δ positions back is Σ_i a_i·cos(ω_i·Δ + φ_i) over the head's head_dim/2 frequencies ω_i
    (a_i ≥ 0, Σ a_i = 1); the best margin, over amplitudes and phases on a grid, of Δ = 1 over every other
    Δ in 0..context−1. Multiplied by the logit scale (bounded by QK-norm's gains), it is how far the previous
    token's logit can stand above the rest. (Learned absolute positions, as in the reference's GPT-2, have
    no such bound.) Implemented for head_dim 4, the diagnostic model's."""
    import numpy as np

    if head_dim != 4:
        raise ValueError("the grid search covers two frequencies (head_dim 4)")
    offsets = np.arange(context)
    w = theta ** -(np.arange(0, head_dim, 2) / head_dim)
    phases = np.linspace(-np.pi, np.pi, grid)
    fast = np.cos(w[0] * offsets[None, :] + phases[:, None])  # (phase, Δ)
    slow = np.cos(w[1] * offsets[None, :] + phases[:, None])
    best = -np.inf
    for a in np.linspace(0, 1, 51):
        score = a * fast[:, None, :] + (1 - a) * slow[None, :, :]  # (φ1, φ2, Δ)
        others = np.delete(score, 1, axis=2).max(axis=2)
        best = max(best, float((score[:, :, 1] - others).max()))
    return best


def tables(result: dict) -> str:
    """The JSON's arms (and its attention probe, when run) as markdown tables."""
    marks = list(range(1000, PAPER_STEPS + 1, 1000))
    lines = ["| arm | Dyck warm-up | steps evaluated | " + " | ".join(f"{m // 1000}k" for m in marks)
             + " | last | first ≥ 50% / 90% |", "| --- | --- | --- |" + " --- |" * len(marks) + " --- | --- |"]
    for key, arm in result["arms"].items():
        at = {p["step"]: p["accuracy"] for p in arm["curve"]}
        first = arm["first_step_at_or_above"]
        warmup = f"{arm['warmup_steps']:,} steps" if arm["warmup_steps"] else "none"
        lines.append(f"| {key} | {warmup} | "
                     f"{arm['steps_evaluated']:,} of {PAPER_STEPS:,} | "
                     + " | ".join(f"{at[m]:.1%}" if m in at else "" for m in marks)
                     + f" | {arm['final_accuracy']:.1%} | {first['0.5'] or '—'} / {first['0.9'] or '—'} |")
    if "attention" in result:
        lines += ["", "| run | layer | previous-token weight at values, best head (uniform) | query → queried value, "
                  "best head (uniform) | query → queried key, best head |", "| --- | --- | --- | --- | --- |"]
        for run, probe in result["attention"].items():
            for i, layer in enumerate(probe["layers"]):
                lines.append(f"| {run} | {i} | {max(layer['previous_token_at_values_by_head']):.3f} "
                             f"({probe['uniform_at_a_value']:.3f}) | {max(layer['query_to_queried_value_by_head']):.3f} "
                             f"({probe['uniform_at_the_query']:.3f}) | {max(layer['query_to_queried_key_by_head']):.3f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["run", "collect", "attention"])
    parser.add_argument("--runs-dir", type=Path, nargs="+", default=[Path("runs/evidence-haystack")],
                        help="run: one; collect: any number (arms run in parallel, each in its own)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS, help="the Dyck warm-ups' steps of 1,000 rows")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--positions", choices=["rope", "learned"], default="rope",
                        help="run: the models' positions (learned: GPT-2's absolute embeddings, transferred too)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="run: a config override for the warm-up and the haystack run, e.g. model.qk_norm=false")
    parser.add_argument("--steps", type=int, default=PAPER_STEPS)
    parser.add_argument("--out", type=Path, default=Path("docs/evidence/procedural_haystack.json"))
    parser.add_argument("--earlier", type=Path, default=None, help="collect: carry over the arms of this earlier JSON")
    args = parser.parse_args()
    if args.what == "attention":  # every finished haystack run in the runs dirs: added to --out's JSON
        result = json.loads(args.out.read_text())
        finished = [d for r in args.runs_dir for d in sorted(r.glob("haystack-*")) if runs.read_summary(d)["status"] == "completed"]
        result["attention"] = result.get("attention", {}) | {d.name: attention(d) for d in finished}
        result["rope_previous_token_margin"] = {"head_dim": 4, "rope_theta": 10000.0,
                                                "margin": rope_previous_token_margin(4, 10000.0)}
        write_json_atomic(args.out, result)
        args.out.with_suffix(".table.md").write_text(tables(result))
        print(tables(result))
    elif args.what == "run":
        run(args.runs_dir[0], args.seeds, args.steps, args.arms, args.warmup_steps, args.positions, tuple(args.sets))
    else:
        result = collect(args.runs_dir, args.out, args.earlier)
        print(json.dumps({"warmups": result["warmups"], **{k: {**a, "curve": a["curve"][-3:]} for k, a in result["arms"].items()}},
                         indent=1))


if __name__ == "__main__":
    main()
