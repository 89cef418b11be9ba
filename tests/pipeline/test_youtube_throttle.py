"""pipeline.sources.throttle: YouTube's per-node budget, rate limit, backoff, circuit breaker and rotation.

Nothing here reaches YouTube. A 127.0.0.1 server (tests/pipeline/http_fixture.py) answers like a blocked
IP: 429s and the error texts yt-dlp reports for bot checks and session rate limits. Real yt-dlp runs
against it through "proxies" that are local servers too; the throttle's shared state is exercised by
several real processes (fork) at once.
"""
from __future__ import annotations

import json
import multiprocessing
import random
import time
import urllib.error
import urllib.request

import pytest

from pipeline.errors import StageError
from pipeline.sources.fetch_config import FetchConfig, YouTubeConfig, fetch_error
from pipeline.sources.throttle import RETRYABLE, NodeThrottle, backoff_delay
from pipeline.sources.youtube import classify_ytdlp_error
from tests.pipeline.http_fixture import YT_ERRORS, LocalHTTPServer, closed_port


def ycfg(tmp_path, **kw) -> YouTubeConfig:
    base = dict(state_dir=str(tmp_path / "state"), throttle_key="test", requests_per_minute=0.0,
                backoff_base_s=0.01, backoff_max_s=0.05, max_attempts=1, breaker_threshold=0)
    base.update(kw)
    return YouTubeConfig(**base)


def http_attempt(url: str):
    """One "YouTube request": GET the local server and classify its answer as the fetch stage does."""
    def attempt(egress):
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read())
        if "error" in answer:
            raise fetch_error(classify_ytdlp_error(answer["error"]), answer["error"])
        return "ok"
    return attempt


def _worker(cfg, url, videos, barrier, queue):
    throttle = NodeThrottle(cfg)
    barrier.wait()  # all workers start together, as a node's fetch workers do
    out = []
    for _ in range(videos):
        try:
            out.append((throttle.run(http_attempt(url)), time.time()))
        except StageError as exc:
            out.append((exc.error_class, time.time()))
    queue.put(out)


def run_workers(cfg, url, workers=3, videos=4) -> list[tuple[str, float]]:
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(cfg, url, videos, barrier, queue)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    results = [item for _ in procs for item in queue.get(timeout=60)]
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    return results


def classes(results) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome, _ in results:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------- classes


def test_fixture_texts_are_what_ytdlp_builds():
    """The server's bot-check text is the message yt-dlp's YouTube extractor builds (its own login hint)."""
    pytest.importorskip("yt_dlp")
    from yt_dlp.extractor.youtube import YoutubeIE
    from yt_dlp.utils import DownloadError, ExtractorError

    reason = "Sign in to confirm you’re not a bot"  # YouTube's playabilityStatus reason
    message = f"{reason}. {YoutubeIE()._youtube_login_hint}"  # as _video.py builds it
    error = DownloadError(f"ERROR: {ExtractorError(message, expected=True, video_id='dQw4w9WgXcQ', ie='youtube')}")
    assert str(error) == YT_ERRORS["bot"]
    assert classify_ytdlp_error(str(error)) == "youtube_bot_check"
    assert classify_ytdlp_error(YT_ERRORS["ratelimit"]) == "youtube_rate_limited"
    captcha = "Video unavailable. YouTube is requiring a captcha challenge before playback"
    assert classify_ytdlp_error(captcha) == "youtube_bot_check"
    assert {"youtube_bot_check", "youtube_rate_limited", "youtube_breaker_open", "youtube_budget_exhausted"} <= RETRYABLE
    assert not {"youtube_unavailable", "youtube_private", "youtube_login_required"} & RETRYABLE


def test_ytdlp_429_rotates_proxies_and_stays_retryable(tmp_path, tiny_mp4):
    """Real yt-dlp (child process) through two local "proxies" that both answer 429: each attempt uses the
    next proxy, the outcome is yt-dlp's HTTP Error 429 as youtube_rate_limited, and no credential leaks."""
    pytest.importorskip("yt_dlp")
    from pipeline.sources.youtube import download_youtube

    with LocalHTTPServer() as p1, LocalHTTPServer() as p2:
        # The target port is closed: a request can only be answered through a proxy.
        url = f"http://127.0.0.1:{closed_port()}/status/429"
        proxies = [f"http://user:s3cret@127.0.0.1:{p1.port}", f"http://127.0.0.1:{p2.port}"]
        cfg = FetchConfig(youtube=ycfg(tmp_path, proxies=proxies, max_attempts=3, retries=0, socket_timeout_s=10))
        with pytest.raises(StageError) as info:
            download_youtube(url, tmp_path / "out", cfg, label="vid")
        err = info.value
        assert err.error_class == "youtube_rate_limited" and err.error_class in RETRYABLE
        assert "HTTP Error 429: Too Many Requests" in err.message and "attempt 3/3" in err.message
        assert "s3cret" not in err.message and "s3cret" not in str(err)
        assert "http://***@127.0.0.1" in err.message  # attempt 3 went through p1 again
        hits1, hits2 = p1.hits("/status/429"), p2.hits("/status/429")
        assert hits1 >= 2 and hits2 >= 1 and hits1 == 2 * hits2  # p1, p2, p1: round robin
        state = NodeThrottle(cfg.youtube).snapshot()
        assert state["requests"] == 3 and state["rate_limited"] == 3 and state.get("consecutive_bot_checks", 0) == 0


# ---------------------------------------------------------------------------------------------- shared state


def test_breaker_opens_after_n_consecutive_bot_checks_across_processes(http_server, tmp_path):
    """3 worker processes, 4 videos each, every request bot-checked: the node stops after exactly N=4
    requests; the other 8 fetches fail at once as youtube_breaker_open (retryable), sending nothing."""
    n = 4
    cfg = ycfg(tmp_path, breaker_threshold=n, breaker_pause_s=60, breaker_max_wait_s=0,
               requests_per_minute=300)  # 0.2 s apart: each answer is in before the next slot
    results = run_workers(cfg, http_server.url("/blocked/bot"))
    assert http_server.hits("/blocked/bot") == n
    assert classes(results) == {"youtube_bot_check": n, "youtube_breaker_open": 12 - n}
    state = NodeThrottle(cfg).snapshot()
    assert state["requests_at_open"] == [n] and state["breaker_opens"] == 1 and state["bot_checks"] == n
    assert state["refused_breaker"] == 12 - n and state["breaker_open_until"] > time.time() + 50


def test_open_breaker_makes_fetches_wait_then_success_resets(http_server, tmp_path):
    cfg = ycfg(tmp_path, breaker_threshold=2, breaker_pause_s=0.6, breaker_max_wait_s=10)
    throttle = NodeThrottle(cfg)
    url = http_server.url("/blocked/bot/2")  # two bot checks, then normal answers
    for _ in range(2):
        with pytest.raises(StageError) as info:
            throttle.run(http_attempt(url))
        assert info.value.error_class == "youtube_bot_check"
    start = time.monotonic()
    assert throttle.run(http_attempt(url)) == "ok"  # waited for the pause, then went through
    assert 0.5 <= time.monotonic() - start < 5
    state = throttle.snapshot()
    assert state["consecutive_bot_checks"] == 0 and state["requests"] == 3 and http_server.hits("/blocked/bot/2") == 3


def test_budget_stops_requests_on_the_node(http_server, tmp_path):
    cfg = ycfg(tmp_path, max_requests=5)
    results = run_workers(cfg, http_server.url("/blocked/ok"))
    assert http_server.hits("/blocked/ok") == 5
    assert classes(results) == {"ok": 5, "youtube_budget_exhausted": 7}


def test_rate_limit_spaces_requests_of_all_processes(http_server, tmp_path):
    interval = 0.2
    cfg = ycfg(tmp_path, requests_per_minute=60 / interval)
    start = time.time()
    results = run_workers(cfg, http_server.url("/blocked/ok"), workers=3, videos=2)
    assert classes(results) == {"ok": 6}
    done = sorted(t for _, t in results)
    # Slot i is at least i intervals after the first; a late process can only push a request later.
    for i, t in enumerate(done):
        assert t - done[0] >= i * interval - 0.05, (i, [round(x - start, 3) for x in done])
    assert done[-1] - start >= 5 * interval - 0.05


def test_backoff_grows_with_full_jitter_and_rotates(http_server, tmp_path):
    rng = random.Random(7)
    for attempt, cap in enumerate([1, 2, 4, 8, 10, 10]):
        delays = [backoff_delay(attempt, 1.0, 10.0, rng) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays) and len(set(delays)) == 200  # jittered, never above the cap
        assert 0.35 * cap < sum(delays) / len(delays) < 0.65 * cap  # full jitter: mean about cap / 2

    slept, used = [], []
    cfg = ycfg(tmp_path, max_attempts=4, backoff_base_s=1.0, backoff_max_s=3.0,
               proxies=["http://a.invalid:1", "socks5://b.invalid:2"], cookie_files=["c1.txt", "c2.txt", "c3.txt"])
    throttle = NodeThrottle(cfg, sleep=slept.append, rng=random.Random(1))  # recorded instead of slept
    attempt = http_attempt(http_server.url("/blocked/ratelimit"))

    def recording(egress):
        used.append((egress.proxy, egress.cookie_file.rsplit("/", 1)[-1]))
        return attempt(egress)

    with pytest.raises(StageError) as info:
        throttle.run(recording)
    assert info.value.error_class == "youtube_rate_limited" and "attempt 4/4" in info.value.message
    assert http_server.hits("/blocked/ratelimit") == 4
    assert len(slept) == 3 and all(0 <= d <= cap for d, cap in zip(slept, [1, 2, 3]))
    assert [p for p, _ in used] == ["http://a.invalid:1", "socks5://b.invalid:2"] * 2
    assert [c for _, c in used] == ["c1.txt", "c2.txt", "c3.txt", "c1.txt"]


def test_permanent_failures_are_not_retried(http_server, tmp_path):
    http_server.add_file("gone.json", json.dumps({"error": "ERROR: [youtube] x: Video unavailable"}).encode())
    throttle = NodeThrottle(ycfg(tmp_path, max_attempts=4, breaker_threshold=3))
    throttle.record("youtube_bot_check")
    with pytest.raises(StageError) as info:
        throttle.run(http_attempt(http_server.url("/files/gone.json")))
    assert info.value.error_class == "youtube_unavailable" and "attempt 1/4" in info.value.message
    assert http_server.hits("/files/gone.json") == 1
    assert throttle.snapshot()["consecutive_bot_checks"] == 0  # YouTube answered about the video: not blocked


def test_throttle_config_keys_from_yaml(tmp_path):
    from common.config import ConfigError, load_config

    path = tmp_path / "fetch.yaml"
    path.write_text("youtube:\n  requests_per_minute: 6\n  max_requests: 1000\n  breaker_threshold: 3\n"
                    "  proxies: [http://u:p@127.0.0.1:3128, socks5://127.0.0.1:1080]\n  cookie_files: [a.txt]\n")
    cfg = load_config(FetchConfig, path)
    assert cfg.youtube.requests_per_minute == 6 and cfg.youtube.max_requests == 1000
    assert cfg.youtube.proxies[1] == "socks5://127.0.0.1:1080" and cfg.youtube.cookie_files == ["a.txt"]
    path.write_text("youtube:\n  proxies: [ftp://u:secret@host]\n")
    with pytest.raises(ConfigError) as info:
        load_config(FetchConfig, path)
    assert "secret" not in str(info.value)
