"""Checkpoints on an fsspec URL (training/checkpoint.py), without a server: fsspec's in-process memory://
filesystem. Each rank uploads its own staged files, a tag counts only once complete.json is there, resume
downloads every rank's files, pruning and the metrics round trip work on the URL."""
from __future__ import annotations

import uuid

from training import checkpoint as ckpt


def stage_tag(store: ckpt.RunStore, tag: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = store.local_root / tag / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_ranks_upload_their_own_files_and_complete_json_commits(tmp_path):
    url = f"memory://tvts-{uuid.uuid4().hex[:8]}/run"
    ranks = [ckpt.RunStore(url, rank, state_root=str(tmp_path / f"node{rank}")) for rank in (0, 1)]
    assert all(s.remote for s in ranks) and ranks[0].local != ranks[1].local
    info = {"preset": "tiny", "model": {}, "world_size": 2, "mode": "pretrain"}

    for step in (2, 4):
        tag = ckpt.tag_for(step)
        stage_tag(ranks[0], tag, {"mp_rank_00_model_states.pt": b"model", "rank00000.pt": b"r0",
                                  "zero_pp_rank_0_mp_rank_00_optim_states.pt": b"z0"})
        stage_tag(ranks[1], tag, {"rank00001.pt": b"r1", "zero_pp_rank_1_mp_rank_00_optim_states.pt": b"z1"})
        for store in ranks:
            store.upload_tag(tag)
        # every file is there, but without the marker the tag does not exist for resume
        assert ckpt.latest_complete(url) == (None if step == 2 else (2, "step00000002"))
        ckpt.mark_complete(ckpt.child(ranks[0].root, tag), step, info)
        ckpt.prune(ranks[0].root, keep_last=1)
        for store in ranks:
            store.prune_stage(keep=tag)

    assert ckpt.complete_tags(ranks[0].root) == [(4, "step00000004")]           # step 2 pruned on the URL
    assert [p.name for p in ranks[1].local_root.iterdir()] == ["step00000004"]  # and in the staging folder
    root, tag = ckpt.resolve_resume(None, url)
    assert (root, tag) == (f"{url}/checkpoints", "step00000004")
    ckpt.check_compatible(ckpt.child(root, tag), info)

    # a rank on a third machine resumes: the whole tag, every rank's files, into its own staging folder
    other = ckpt.RunStore(url, 1, state_root=str(tmp_path / "node2"))
    local_root = other.fetch_tag(root, tag)
    assert sorted(p.name for p in (local_root / tag).iterdir()) == [
        "complete.json", "mp_rank_00_model_states.pt", "rank00000.pt", "rank00001.pt", "run.json",
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert not [p for p in local_root.iterdir() if p.name.startswith(".")]    # no download leftovers

    # metrics: staged, published, pulled back by another node; pull removes what the URL does not have
    (ranks[0].local / "metrics.jsonl").write_text('{"step": 1}\n')
    ranks[0].publish("metrics.jsonl", "heldout.jsonl")
    (other.local / "heldout.jsonl").write_text("stale\n")
    other.pull("metrics.jsonl", "heldout.jsonl")
    assert (other.local / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert not (other.local / "heldout.jsonl").exists()
    assert ranks[0].where("metrics.jsonl") == f"{url}/metrics.jsonl"

    ckpt.clear_run(url)
    assert ckpt.resolve_resume(None, url) is None
