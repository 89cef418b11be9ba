"""A manifest row whose url, captions or meta changed under the same video id is redone (its input shard with
it) and its old samples replaced; the other shards stay as they are; the summary counts the changed rows."""
from __future__ import annotations

import json
import os

import webdataset as wds

from pipeline.ledger import Ledger
from pipeline.run import main
from tests.pipeline.corpus import make_corpus, make_vtt


def _args(manifest, out):
    sets = [f"input.manifest={manifest}", f"output.dir={out}", "shards.input_rows=2", "asr.enabled=false",
            "segment.samples_per_slot=1"]
    return [a for s in sets for a in ("--set", s)] + ["--no-ray", "--no-progress"]


def _texts(out, video_id):
    tars = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    return [" ".join(w["text"] for w in json.loads(s["json"])["windows"])
            for s in wds.WebDataset(tars, shardshuffle=False) if json.loads(s["json"])["video_id"] == video_id]


def test_changed_rows_are_redone(tmp_path):
    manifest = make_corpus(tmp_path / "corpus", n=4, duration=48.0)
    out = tmp_path / "out"
    assert main(_args(manifest, out)) == 0
    untouched = out / "shards" / "shard-000001.tar"
    before = (untouched.read_bytes(), os.stat(untouched).st_mtime_ns)
    old_text = _texts(out, "vid0")
    with Ledger(out / "ledger.sqlite") as ledger:
        old_fp = {o["video_id"]: o["fingerprint"] for o in ledger.outcomes()}

    # vid0's captions re-downloaded with other words (same file name); vid1's meta edited in the manifest
    captions = tmp_path / "corpus" / "vid0.en.vtt"
    make_vtt(captions, 48.0, step=0.7)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[1]["meta"] = {"n": 1, "note": "edited"}
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert main(_args(manifest, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["changed"] == 2 and summary["this_run"]["processed"] == 2   # shard 0 only
    assert (summary["written"], summary["samples"]) == (4, 8)                 # replaced, not added
    assert (untouched.read_bytes(), os.stat(untouched).st_mtime_ns) == before  # shard 1 not rewritten
    assert _texts(out, "vid0") != old_text and len(_texts(out, "vid0")) == 2
    tars = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    meta = [json.loads(s["json"])["meta"] for s in wds.WebDataset(tars, shardshuffle=False)
            if json.loads(s["json"])["video_id"] == "vid1"]
    assert meta and all(m.get("note") == "edited" for m in meta)
    with Ledger(out / "ledger.sqlite") as ledger:
        new_fp = {o["video_id"]: o["fingerprint"] for o in ledger.outcomes()}
    assert len(new_fp) == 4 and {v for v in new_fp if new_fp[v] != old_fp[v]} == {"vid0", "vid1"}

    # Unchanged now: nothing to do.
    assert main(_args(manifest, out)) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["changed"] == 0 and again["this_run"]["processed"] == 0
