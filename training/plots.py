"""The loss-curve PNG of a training run, from its metrics.jsonl (matplotlib, no display needed)."""
from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(metrics: str | Path, out: str | Path) -> Path | None:
    """loss / loss_base / loss_sort and sort accuracy against step, with the held-out evaluations of
    heldout.jsonl beside it (train.eval_every) as markers; None when there is nothing to plot."""
    metrics, out = Path(metrics), Path(out)
    if not metrics.is_file():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    heldout_path = metrics.with_name("heldout.jsonl")
    heldout = [json.loads(line) for line in heldout_path.read_text().splitlines() if line.strip()] \
        if heldout_path.is_file() else []
    heldout = [r for r in heldout if "sort_acc" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.atomic import atomic_open

    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "loss_base", "loss_sort"):
        ax_loss.plot(steps, [r[key] for r in rows], label=key)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss (L = L_base + 2 L_sort)")
    ax_loss.legend()
    ax_acc.plot(steps, [r["sort_acc"] for r in rows], label="sort accuracy (all K right)")
    if "pos_acc" in rows[0]:
        ax_acc.plot(steps, [r["pos_acc"] for r in rows], label="position accuracy")
    if heldout:                                   # held-out scores are in %, training ones are fractions
        h_steps = [r["step"] for r in heldout]
        ax_acc.plot(h_steps, [r["sort_acc"] / 100 for r in heldout], "o--", color="C0", label="held-out sort accuracy")
        ax_acc.plot(h_steps, [r["pos_acc"] / 100 for r in heldout], "o--", color="C1", label="held-out position accuracy")
        for key, colour, label in (("sort_acc_text_only", "C2", "held-out sort, text only (no video tokens)"),
                                   ("sort_acc_other_video", "C3", "held-out sort, another video's frames")):
            found = [r for r in heldout if key in r]   # other_video: absent when no batch had 2 videos
            if found:
                ax_acc.plot([r["step"] for r in found], [r[key] / 100 for r in found], "x:", color=colour, label=label)
    ax_acc.axhline(1 / 256, color="grey", linestyle=":", label="sort chance 1/256")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylim(0, 1)
    ax_acc.set_title("sort accuracy: training (lines) and held-out (markers)" if heldout else "training accuracy")
    ax_acc.legend()
    fig.tight_layout()
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return out
