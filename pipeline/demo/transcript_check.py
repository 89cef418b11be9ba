"""How true the demo's sample transcripts are: `python -m pipeline.demo.transcript_check --corpus DIR --shards GLOB`.

The demo generator knows every spoken word and its time (DIR/narration.jsonl). For each sample window in
the shards, the reference is the narration's words whose start lies strictly inside the window; the
hypothesis is the window's text. Prints the word error rate (WER: word edit distance / reference words,
over lower-case words without punctuation) per transcript source (vtt, srt, merlot, asr) as JSON. Window
edges cost a little: a word spoken across an edge may be put on either side of it.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

from pipeline.demo.script import normalize_words

__all__ = ["word_errors", "window_wer", "main"]


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions and deletions cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def _samples(shards: list[str]):
    for path in shards:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    yield json.load(tar.extractfile(member))


def window_wer(shards: list[str], narration_path: str | Path) -> dict[str, dict]:
    """{source: {"wer", "errors", "reference_words", "windows", "videos"}} over every window of the shards."""
    narration = {r["video_id"]: r for r in map(json.loads, Path(narration_path).read_text().splitlines()) if r}
    totals: dict[str, dict] = defaultdict(lambda: {"errors": 0, "reference_words": 0, "windows": 0, "videos": set()})
    for sample in _samples(shards):
        script = narration.get(sample["video_id"])
        if script is None:
            continue
        row = totals[sample["transcript"]["source"]]
        for window in sample["windows"]:
            reference = normalize_words(" ".join(w["word"] for w in script["words"]
                                                 if window["start"] < w["start"] < window["end"]))
            row["errors"] += word_errors(reference, normalize_words(window["text"]))
            row["reference_words"] += len(reference)
            row["windows"] += 1
        row["videos"].add(sample["video_id"])
    return {source: {**row, "videos": len(row["videos"]),
                     "wer": round(row["errors"] / max(1, row["reference_words"]), 4)}
            for source, row in sorted(totals.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo.transcript_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="the demo corpus folder (holds narration.jsonl)")
    parser.add_argument("--shards", required=True, help="glob of the pipeline's shard tars")
    args = parser.parse_args(argv)
    shards = sorted(glob.glob(args.shards))
    narration = Path(args.corpus) / "narration.jsonl"
    if not shards or not narration.is_file():
        print(f"error: no shards match {args.shards!r} or {narration} is missing (run the demo's first two steps)",
              file=sys.stderr)
        return 1
    print(json.dumps(window_wer(shards, narration)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
