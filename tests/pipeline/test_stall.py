"""Every wait has a limit: a stage step with no progress is retried, then fails with `stalled`; an fsspec copy
from a store that never answers fails with `fsspec_timeout`; the job never hangs on either."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from pipeline import watchdog
from pipeline.config import PipelineConfig
from pipeline.stages import VideoWork, run_stage
from tests.pipeline.corpus import make_corpus
from tests.s3_server import restore_env, set_env


def _cfg(timeout_s: float = 0.6, retries: int = 1) -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.stall.timeout_s, cfg.stall.retries = timeout_s, retries
    return cfg


def _items(*ids: str) -> list[VideoWork]:
    return [VideoWork(order=i, row={"video_id": v, "url": f"/nowhere/{v}.mp4"}) for i, v in enumerate(ids)]


def test_a_silent_step_is_retried_then_fails_stalled_and_the_others_go_on():
    release = threading.Event()
    calls: list[str] = []

    def step(item: VideoWork) -> None:
        calls.append(item.video_id)
        if item.video_id == "stuck":
            release.wait(30)           # a call that never returns (until the test lets it)
            item.samples.append("late")  # what the abandoned attempt does afterwards must not reach the item
            item.info = {"late": True}
        else:
            item.info = {"ok": True}

    started = time.monotonic()
    items = run_stage("probe", _items("a", "stuck", "b"), step, _cfg(timeout_s=0.6, retries=1))
    took = time.monotonic() - started
    release.set()
    time.sleep(0.2)
    a, stuck, b = items
    assert calls == ["a", "stuck", "stuck", "b"], "the stalled step was not retried exactly once"
    assert (stuck.status, stuck.stage, stuck.error_class) == ("failed", "probe", "stalled")
    assert "no progress for 0.6 s" in stuck.message and "2 attempts" in stuck.message
    assert stuck.samples == [] and stuck.info is None, "an abandoned attempt changed the video's record"
    assert a.info == {"ok": True} and b.info == {"ok": True} and a.ok and b.ok
    assert 1.2 <= took < 6, took


def test_progress_and_calls_with_their_own_limit_are_not_stalls():
    def beating(item: VideoWork) -> None:      # 1.5 s of work, a heartbeat every 0.2 s
        for _ in range(8):
            time.sleep(0.2)
            watchdog.beat()
        item.info = {"beat": True}

    def limited(item: VideoWork) -> None:      # a 1.5 s call that has a 3 s limit of its own
        with watchdog.allow(3.0):
            time.sleep(1.5)
        item.info = {"limited": True}

    cfg = _cfg(timeout_s=0.6, retries=0)
    (one,) = run_stage("asr", _items("x"), beating, cfg)
    (two,) = run_stage("decode", _items("y"), limited, cfg)
    assert one.ok and one.info == {"beat": True}
    assert two.ok and two.info == {"limited": True}


def test_errors_and_partial_state_of_a_finished_step_are_kept():
    def failing(item: VideoWork) -> None:
        item.fetched = {"video_path": "/tmp/x", "files": []}   # downloaded, then something went wrong
        raise ValueError("boom")

    (item,) = run_stage("fetch", _items("z"), failing, _cfg())
    assert (item.status, item.error_class) == ("failed", "internal_ValueError")
    assert item.fetched == {"video_path": "/tmp/x", "files": []}


def test_stall_timeout_zero_runs_inline():
    seen = []
    (item,) = run_stage("probe", _items("q"), lambda it: seen.append(threading.current_thread()), _cfg(0))
    assert item.ok and seen == [threading.main_thread()]


@pytest.fixture
def silent_endpoint():
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a stuck object store)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_fsspec_copy_from_a_store_that_never_answers_times_out(silent_endpoint, tmp_path):
    from pipeline.sources.fetch import fetch
    from pipeline.sources.fetch_config import FetchConfig
    from pipeline.sources.rows import ManifestRow

    saved = set_env({"AWS_ENDPOINT_URL": silent_endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                     "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        cfg = FetchConfig(read_timeout_s=1.0, total_timeout_s=30.0)
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            fetch(ManifestRow(video_id="v1", url="s3://bucket/v1.mp4"), tmp_path, cfg)
        took = time.monotonic() - started
    finally:
        restore_env(saved)
        s3fs.S3FileSystem.clear_instance_cache()
    assert getattr(caught.value, "error_class", None) == "fsspec_timeout", caught.value
    assert "no data for fetch.read_timeout_s=1s" in str(caught.value)
    assert took < 10, took
    assert not list(tmp_path.rglob("*.part")), "a .part file stayed"


def test_the_job_goes_on_past_a_hung_video(tmp_path, monkeypatch):
    """A whole job (no Ray) with one video whose probe hangs: that video fails `probe/stalled`, the others
    are written, and the job ends."""
    import pipeline.media.probe as probe_module
    from pipeline.run import main

    manifest = make_corpus(tmp_path / "corpus", n=3, duration=40.0)
    real_probe, release = probe_module.probe, threading.Event()

    def probe(path, cfg=None):
        if "vid1" in str(path):
            release.wait(60)
        return real_probe(path, cfg)

    monkeypatch.setattr(probe_module, "probe", probe)
    out = tmp_path / "out"
    sets = [f"input.manifest={manifest}", f"output.dir={out}", "asr.enabled=false", "stall.timeout_s=1",
            "stall.retries=1"]
    try:
        assert main([a for s in sets for a in ("--set", s)] + ["--no-ray", "--no-progress"]) == 0
    finally:
        release.set()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 2 and summary["failed"] == 1, summary
    assert summary["errors"] == {"stalled": 1}, summary["errors"]
