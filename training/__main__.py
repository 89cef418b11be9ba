"""`python -m training describe --preset NAME`: the parameter counts of a model preset, as JSON.
`python -m training summary --eval-dir DIR`: evaluation results next to the random-init baseline and chance
(training/eval_summary.py).

Counting never downloads anything: the text encoder is built from its architecture config (a local
folder's config.json, or a built-in config for a known hub model such as distilbert-base-uncased),
with random weights; the JSON says where the text config came from.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from common.config import ConfigError


def describe(preset: str, overrides: list[str]) -> dict:
    import torch

    from training.model import TVTS, count_parameters
    from training.model_config import load_preset

    cfg = load_preset(preset, overrides)
    # Weights do not change the counts: build without loading them (and without the ImageMAE file).
    counting_cfg = dataclasses.replace(
        cfg, text=dataclasses.replace(cfg.text, pretrained=False),
        video=dataclasses.replace(cfg.video, init=None))
    with torch.device("meta"):          # shapes only: no memory, no init time
        model = TVTS(counting_cfg)
    v = cfg.video
    return {
        "preset": cfg.name,
        **count_parameters(model),
        "counted_from": "architecture configs only (no weights loaded or downloaded)",
        "text_config": model.text.origin.removeprefix("random init from "),
        "text_pretrained": cfg.text.pretrained,
        "video_tokens": {"slices": v.time_slices, "patches_per_slice": v.grid ** 2,
                         "kept_per_slice": max(1, round(v.grid ** 2 * (1 - v.mask_ratio)))},
        "embed_dim": cfg.embed_dim,
        "num_transcripts": cfg.num_transcripts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="TVTS model tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("describe", help="print the parameter counts (video, text, sort, total) of a preset as JSON")
    p.add_argument("--preset", required=True, help="preset name (training/presets/NAME.yaml) or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset key, e.g. --set video.depth=6 (repeatable)")
    p = sub.add_parser("summary", help="the evaluation results of a model next to its random-init baseline and chance")
    p.add_argument("--eval-dir", required=True, help="the evaluation output.dir (demo: data/demo-run/eval)")
    args = parser.parse_args(argv)
    if args.command == "summary":
        from training.eval_summary import summary_lines

        print("\n".join(summary_lines(args.eval_dir)))
        return 0
    try:
        print(json.dumps(describe(args.preset, args.overrides), indent=2))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
