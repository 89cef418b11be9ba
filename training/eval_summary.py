"""The evaluation results of one model side by side with a random-init model of its preset and with chance:
`python -m training summary --eval-dir DIR` (the demo's last lines).

Reads what `python -m training.evaluate` wrote: DIR/<task>.json (held-out sort and t2v),
DIR/<dataset>/<task>.json (downstream tasks) and the same under DIR/random-init/ (`--random-init`) and,
when there, DIR/preset-init/ (`--preset-init`: a column of its own). One row per headline metric; a
result that is not there shows as "-".
"""
from __future__ import annotations

import json
from pathlib import Path

BASELINES = ("random-init", "preset-init")      # training.evaluate's --random-init / --preset-init folders
# task -> (metric key, chance key or None, label), in the order printed
HEADLINES = {
    "sort": [("sort_acc", "chance_sort_acc", "sort accuracy, all K right (mask)"),
             ("sort_acc_unmasked", "chance_sort_acc", "sort accuracy, all K right (no mask)"),
             ("pos_acc", "chance_pos_acc", "position accuracy")],
    "t2v": [("R@1", "chance_R@1", "text-to-video R@1"), ("R@5", None, "text-to-video R@5"),
            ("MedR", None, "text-to-video MedR (lower is better)")],
    "v2v": [("R@1", "chance_R@1", "video-to-video R@1 (same class)"), ("R@5", "chance_R@5", "video-to-video R@5")],
    "linear-probe": [("top1", "chance_top1", "linear probe top-1")],
    # The spec's numbers are precision per type at each rho (svo-probes.json has them all); the summary
    # keeps the rho-free pairwise accuracy per type and the overall precision at each default rho.
    "svo-probes": [("pairwise_acc", "chance_pairwise_acc", "SVO pairwise acc, cos(pos) > cos(neg)"),
                   *((f"pairwise_acc_{t}", "chance_pairwise_acc", f"SVO pairwise acc, {t} negatives")
                     for t in ("subject", "verb", "object")),
                   *((f"precision@{r}", "chance_precision", f"SVO precision at rho {r}") for r in ("0.2", "0.25", "0.3"))],
    "finetune": [("top1", "chance_top1", "fine-tune top-1")],
}


def _results(folder: Path) -> dict[tuple[str, str], dict]:
    """(task, dataset or "held-out") -> result, for every <task>.json under folder (one level deep)."""
    found = {}
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*/*.json")):
        # A model folder's random-init/ and preset-init/ are columns of their own, not its datasets; the
        # held-out results directly inside a baseline folder are that baseline's.
        if (path.parent != folder and path.parent.name in BASELINES) or path.stem not in HEADLINES:
            continue
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        found[(path.stem, result.get("dataset", "held-out"))] = result
    return found


def summary_lines(eval_dir: str | Path) -> list[str]:
    eval_dir = Path(eval_dir)
    model = _results(eval_dir)
    baselines = {name: _results(eval_dir / name) for name in BASELINES}
    columns = [name for name in BASELINES if name == "random-init" or baselines[name]]
    rows = []
    for (task, dataset), result in sorted(model.items(), key=lambda kv: (list(HEADLINES).index(kv[0][0]), kv[0][1])):
        for key, chance_key, label in HEADLINES[task]:
            if key not in result:
                continue
            chance = result.get(chance_key) if chance_key else None
            unit = "" if key.endswith("MedR") else "%"
            cell = lambda v: "-" if v is None else f"{v:.2f}{unit}"  # noqa: E731
            base = [cell(baselines[name].get((task, dataset), {}).get(key)) for name in columns]
            rows.append((f"{task} ({dataset})", label, cell(result[key]), *base, cell(chance)))
    if not rows:
        return [f"no evaluation results in {eval_dir}"]
    head = ("task (data)", "metric", "model", *(name.replace("-", " ") for name in columns), "chance")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else (f"{{:<{w}}}" if i == 1 else f"{{:>{w}}}")
                    for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    preset = next(iter(model.values())).get("preset")
    lines.append(f"model: {eval_dir}'s results ({preset}); random init: the same preset, random weights "
                 f"({eval_dir / 'random-init'})" + ("; preset init: the preset's image/text weights before "
                                                    "pretraining" if "preset-init" in columns else ""))
    return lines
