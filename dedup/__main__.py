"""`python -m dedup leakage|review|blocklist|near-dups|rewrite-shards ...` (see README, dedup/leakage.py, dedup/review.py)."""
from __future__ import annotations

import argparse
import sys

from common.cli import dispatch

USAGE = """usage: python -m dedup COMMAND ...

commands:
  leakage         corpus vs downstream sets: python -m dedup leakage --config configs/leakage.yaml [--set key=value ...]
                  writes report.html, report.json, summary.json and blocklist.txt into output.dir
  review          the report's review page on 127.0.0.1, decisions saved beside it (decisions.json):
                  python -m dedup review --report OUTPUT_DIR [--port 8765]
  blocklist       rebuild blocklist.txt from decisions.json, no features recomputed:
                  python -m dedup blocklist --report OUTPUT_DIR [--decisions DOWNLOADED.json] [--undecided block|keep]
  near-dups       within-corpus near-duplicates: python -m dedup near-dups --config configs/demo.yaml [--set ...]
                  writes near_dups.json and blocklist.txt into output.dir (keeps one sample per group)
  rewrite-shards  copy shards without blocked samples:
                  python -m dedup rewrite-shards --shards 'DIR/shard-*.tar' --blocklist FILE [--blocklist FILE] --out DIR
"""


def rewrite_main(argv: list[str]) -> int:
    from common import storage
    from dedup.blocklist import read_blocklist, rewrite_shards
    from dedup.corpus import expand_shards

    parser = argparse.ArgumentParser(prog="python -m dedup rewrite-shards",
                                     description="Write shards without the samples a blocklist names.")
    parser.add_argument("--shards", required=True, help="glob, brace pattern, folder or comma list of shard tars "
                                                        "(local or fsspec URLs)")
    parser.add_argument("--blocklist", action="append", required=True, help="blocklist file or URL (repeatable)")
    parser.add_argument("--out", required=True, help="output folder or URL for the rewritten shards")
    args = parser.parse_args(argv)
    try:
        if not storage.is_local(args.out):
            storage.check_location(args.out, "--out", writable=True)
        shards = expand_shards(args.shards)
        missing = [p for p in args.blocklist if not storage.exists(p)]
    except storage.StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not shards:
        print(f"error: --shards {storage.redact(args.shards)!r} matches no files", file=sys.stderr)
        return 1
    if missing:
        print(f"error: blocklist {storage.redact(missing[0])} does not exist (run python -m dedup leakage first)",
              file=sys.stderr)
        return 1
    result = rewrite_shards(shards, read_blocklist(args.blocklist), args.out)
    print(f"kept {result['kept']} samples, dropped {result['blocked']} -> {result['out_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return dispatch(argv, USAGE, {"leakage": "dedup.leakage:main", "review": "dedup.review:review_main",
                                  "blocklist": "dedup.review:blocklist_main", "near-dups": "dedup.near_dups:main",
                                  "near_dups": "dedup.near_dups:main", "rewrite-shards": rewrite_main})


if __name__ == "__main__":
    sys.exit(main())
