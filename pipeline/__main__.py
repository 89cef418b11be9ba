"""`python -m pipeline run|words ...` (see README)."""
from __future__ import annotations

import sys

USAGE = """usage: python -m pipeline COMMAND ...

commands:
  run     run the data job: python -m pipeline run --config configs/demo.yaml [--set key=value ...]
  words   parse one caption/annotation file and print one JSON object per word: python -m pipeline words FILE
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        from pipeline.run import main as run_main

        return run_main(rest)
    if command == "words":
        from pipeline.transcripts import main_words

        return main_words(rest)
    print(f"error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
