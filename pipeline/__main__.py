"""`python -m pipeline run|words|manifest ...` (see README)."""
from __future__ import annotations

import sys

from common.cli import dispatch

USAGE = """usage: python -m pipeline COMMAND ...

commands:
  run       run the data job: python -m pipeline run --config configs/demo.yaml [--set key=value ...]
  words     parse one caption/annotation file and print one JSON object per word: python -m pipeline words FILE
  manifest  manifest tools: python -m pipeline manifest convert IN OUT (any supported format -> native jsonl)
"""


def main(argv: list[str] | None = None) -> int:
    return dispatch(argv, USAGE, {"run": "pipeline.run:main", "words": "pipeline.transcripts.load:main_words",
                                  "manifest": "pipeline.sources.manifest:main"})


if __name__ == "__main__":
    sys.exit(main())
