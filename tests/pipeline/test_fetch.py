"""pipeline.sources.fetch: local/fsspec in place or copied; HTTP against a 127.0.0.1 server; YouTube parsing,
options, error classes and the yt-dlp child (generic extractor on 127.0.0.1; live YouTube is not reachable)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.errors import StageError
from pipeline.sources.fetch import cleanup, fetch, source_kind, youtube_video_id
from pipeline.sources.fetch_config import FetchConfig, YouTubeConfig
from pipeline.sources.http import sniff_media
from pipeline.sources.rows import ManifestRow

# Big enough that a truncated body still leaves whole chunks on disk (chunk_bytes below).
CHUNK = 64 * 1024


def fast_cfg(**kw) -> FetchConfig:
    base = dict(connect_timeout_s=2.0, read_timeout_s=2.0, total_timeout_s=30.0, retries=2, backoff_s=0.01,
                chunk_bytes=CHUNK)
    base.update(kw)
    return FetchConfig(**base)


@pytest.fixture
def media(tiny_mp4) -> bytes:
    # A real mp4 head followed by padding: sniffs as MP4 and spans several chunks.
    return tiny_mp4.read_bytes() + bytes(range(256)) * 1200


def fetch_error(row, scratch, cfg) -> StageError:
    with pytest.raises(StageError) as info:
        fetch(row, scratch, cfg)
    assert info.value.stage == "fetch"
    return info.value


def assert_inside(path: str | Path, folder: Path) -> None:
    assert Path(path).resolve().is_relative_to(folder.resolve()), path


# ---------------------------------------------------------------------------------------------- sources


@pytest.mark.parametrize("url,kind,vid", [
    ("dQw4w9WgXcQ", "youtube", "dQw4w9WgXcQ"),
    ("-bcdefghijk", "youtube", "-bcdefghijk"),
    ("yt:dQw4w9WgXcQ", "youtube", "dQw4w9WgXcQ"),
    ("https://www.youtube.com/watch?v=-bcdefghijk&t=3s", "youtube", "-bcdefghijk"),
    ("https://m.youtube.com/watch?feature=share&v=dQw4w9WgXcQ", "youtube", "dQw4w9WgXcQ"),
    ("https://youtu.be/dQw4w9WgXcQ?t=1", "youtube", "dQw4w9WgXcQ"),
    ("https://www.youtube.com/shorts/dQw4w9WgXcQ", "youtube", "dQw4w9WgXcQ"),
    ("https://www.youtube.com/embed/dQw4w9WgXcQ", "youtube", "dQw4w9WgXcQ"),
    ("https://www.youtube.com/playlist?list=PL123", "youtube", None),
    ("http://127.0.0.1:8000/a.mp4", "http", None),
    ("s3://bucket/a.mp4", "fsspec", None),
    ("memory://x/a.mp4", "fsspec", None),
    ("file:///data/a.mp4", "local", None),
    ("/data/a.mp4", "local", None),
    ("-rf.mp4", "local", None),
])
def test_source_kind_and_youtube_ids(url, kind, vid):
    assert source_kind(url) == kind
    assert youtube_video_id(url) == vid


def test_sniff_media():
    assert sniff_media(b"\x00\x00\x00\x20ftypisom" + b"\x00" * 20) is True
    assert sniff_media(b"\x1a\x45\xdf\xa3" + b"\x00" * 20) is True
    assert sniff_media(b"<!DOCTYPE html><html><body>404</body></html>") is False
    assert sniff_media(b'{"error": "not found"}') is False
    assert sniff_media(b"just some words\n" * 10) is False
    assert sniff_media(bytes([1, 2, 3, 250, 251, 252]) * 100) is None  # unknown binary: left to ffprobe


# ---------------------------------------------------------------------------------------------- local/fsspec


def test_local_file_is_used_in_place(tmp_path, tiny_mp4):
    captions = tmp_path / "a.vtt"
    captions.write_text("WEBVTT\n")
    row = ManifestRow("v", str(tiny_mp4), captions=str(captions))
    got = fetch(row, tmp_path / "scratch", fast_cfg())
    assert got.video_path == str(tiny_mp4) and got.captions_path == str(captions)
    assert not got.downloaded and got.files == [] and got.info["source_kind"] == "local"
    cleanup(got, fast_cfg())
    assert tiny_mp4.exists() and captions.exists()  # never deleted
    assert not (tmp_path / "scratch").exists()  # nothing was copied


def test_local_missing_and_folder(tmp_path):
    assert fetch_error(ManifestRow("v", str(tmp_path / "nope.mp4")), tmp_path, fast_cfg()).error_class == "not_found"
    assert fetch_error(ManifestRow("v", str(tmp_path)), tmp_path, fast_cfg()).error_class == "not_a_file"
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    err = fetch_error(ManifestRow("v", str(video), captions=str(tmp_path / "gone.vtt")), tmp_path, fast_cfg())
    assert err.error_class == "captions_not_found"
    got = fetch(ManifestRow("v", str(video), captions=str(tmp_path / "gone.vtt")), tmp_path,
                fast_cfg(captions_required=False))
    assert got.captions_path is None and got.info["captions_error"]["error_class"] == "not_found"


def test_fsspec_url_is_copied_to_scratch(tmp_path, media):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/clip.mp4", media)
    scratch = tmp_path / "scratch"
    got = fetch(ManifestRow("v", "memory://bucket/clip.mp4"), scratch, fast_cfg())
    assert got.downloaded and Path(got.video_path).read_bytes() == media
    assert_inside(got.video_path, scratch)
    assert fetch_error(ManifestRow("w", "memory://bucket/none.mp4"), scratch, fast_cfg()).error_class == "not_found"
    assert fetch_error(ManifestRow("x", "memory://bucket/clip.mp4"), scratch,
                       fast_cfg(max_bytes=1000)).error_class == "too_large"
    cleanup(got, fast_cfg())
    assert not Path(got.video_path).exists()


# ---------------------------------------------------------------------------------------------- HTTP


def test_http_ok_with_captions_cleanup_and_keep(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    http_server.add_file("clip.en.vtt", b"WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n")
    row = ManifestRow("v1", http_server.url("/files/clip.mp4"), captions=http_server.url("/files/clip.en.vtt"))
    scratch = tmp_path / "scratch"
    got = fetch(row, scratch, fast_cfg())
    assert got.downloaded and Path(got.video_path).read_bytes() == media
    assert Path(got.captions_path).read_text().startswith("WEBVTT")
    assert got.info["source_kind"] == "http" and got.info["bytes"] == len(media)
    for path in got.files:
        assert_inside(path, scratch)
    cleanup(got, fast_cfg())
    assert not any(Path(p).exists() for p in got.files) and not Path(got.scratch_dir).exists()

    kept = fetch(ManifestRow("v2", row.url), scratch, fast_cfg(keep_downloads=True))
    cleanup(kept, fast_cfg(keep_downloads=True))
    assert Path(kept.video_path).exists()
    # A finished file from an earlier run is reused without a request.
    before = len(http_server.requests)
    again = fetch(ManifestRow("v2", row.url), scratch, fast_cfg())
    assert again.info.get("reused") and len(http_server.requests) == before


def test_http_captions_404_is_a_captions_failure(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    row = ManifestRow("v", http_server.url("/files/clip.mp4"), captions=http_server.url("/status/404"))
    err = fetch_error(row, tmp_path, fast_cfg())
    assert err.error_class == "captions_http_404"
    assert not (tmp_path / "v").exists()  # the failed row's scratch folder is gone


def test_http_404_is_not_retried(http_server, tmp_path):
    err = fetch_error(ManifestRow("v", http_server.url("/status/404")), tmp_path, fast_cfg())
    assert err.error_class == "http_404" and http_server.hits("/status/404") == 1


def test_http_500_is_retried_then_classified(http_server, tmp_path, media):
    err = fetch_error(ManifestRow("v", http_server.url("/status/500")), tmp_path, fast_cfg(retries=2))
    assert err.error_class == "http_5xx" and http_server.hits("/status/500") == 3
    http_server.add_file("clip.mp4", media)
    got = fetch(ManifestRow("w", http_server.url("/fail/2/503/clip.mp4")), tmp_path, fast_cfg(retries=2))
    assert Path(got.video_path).read_bytes() == media and got.info["attempts"] == 3


def test_http_retry_after_is_honoured(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    start = time.monotonic()
    got = fetch(ManifestRow("v", http_server.url("/retry-after/1/1/clip.mp4")), tmp_path, fast_cfg(backoff_s=0.01))
    assert Path(got.video_path).read_bytes() == media and got.info["attempts"] == 2
    assert time.monotonic() - start >= 1.0


def test_concurrent_fetches_of_one_row_do_not_mix(http_server, tmp_path, tiny_mp4):
    import threading

    data = tiny_mp4.read_bytes() + b"\x00" * 20_000
    http_server.add_file("clip.mp4", data)
    row = ManifestRow("v", http_server.url("/trickle/0.005/clip.mp4"))
    results, errors = [], []

    def worker():
        try:
            results.append(fetch(row, tmp_path, fast_cfg()))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 2
    assert all(Path(r.video_path).read_bytes() == data for r in results)
    assert http_server.hits("/trickle/0.005/clip.mp4") == 1  # the second waited and reused the file
    assert sum(bool(r.info.get("reused")) for r in results) == 1


def test_http_slow_server_times_out(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    start = time.monotonic()
    err = fetch_error(ManifestRow("v", http_server.url("/slow/5/clip.mp4")), tmp_path,
                      fast_cfg(read_timeout_s=0.3, retries=1))
    assert err.error_class == "http_timeout"
    assert time.monotonic() - start < 4
    # A server that keeps sending, too slowly, hits the total deadline.
    err = fetch_error(ManifestRow("w", http_server.url("/trickle/0.05/clip.mp4")), tmp_path,
                      fast_cfg(total_timeout_s=0.5, retries=0))
    assert err.error_class == "http_timeout"


def test_http_truncated_body_is_resumed(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    got = fetch(ManifestRow("v", http_server.url("/flaky/clip.mp4")), tmp_path, fast_cfg())
    assert Path(got.video_path).read_bytes() == media
    assert got.info["resumed_from"] > 0
    ranges = [h.get("Range") for _, p, h in http_server.requests if p == "/flaky/clip.mp4"]
    assert ranges[0] is None and ranges[1] == f"bytes={got.info['resumed_from']}-"


def test_http_always_truncated_is_classified(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    err = fetch_error(ManifestRow("v", http_server.url("/truncated/clip.mp4")), tmp_path, fast_cfg(retries=2))
    assert err.error_class == "http_truncated"
    # The first attempt made progress (the .part grew), so it did not use up a retry.
    assert http_server.hits("/truncated/clip.mp4") == 4
    assert not (tmp_path / "v").exists()  # no half file left behind


def test_http_compressed_body_is_decoded(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    got = fetch(ManifestRow("v", http_server.url("/gzip/clip.mp4")), tmp_path, fast_cfg())
    assert Path(got.video_path).read_bytes() == media


def test_http_redirects(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    got = fetch(ManifestRow("v", http_server.url("/redirect/3/clip.mp4")), tmp_path, fast_cfg())
    assert got.info["final_url"].endswith("/files/clip.mp4") and Path(got.video_path).read_bytes() == media
    err = fetch_error(ManifestRow("w", http_server.url("/redirect-loop")), tmp_path, fast_cfg(max_redirects=5))
    assert err.error_class == "http_redirect_loop"
    assert http_server.hits("/redirect-loop") == 6


def test_http_unreachable_host(tmp_path, unused_port):
    err = fetch_error(ManifestRow("v", f"http://127.0.0.1:{unused_port}/a.mp4"), tmp_path, fast_cfg(retries=1))
    assert err.error_class == "unreachable_host"


def test_http_size_cap(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    cfg = fast_cfg(max_bytes=len(media) // 2)
    err = fetch_error(ManifestRow("v", http_server.url("/files/clip.mp4")), tmp_path, cfg)
    assert err.error_class == "too_large" and http_server.hits("/files/clip.mp4") == 1
    # Without a Content-Length the cap is enforced while streaming.
    err = fetch_error(ManifestRow("w", http_server.url("/nolength/clip.mp4")), tmp_path, cfg)
    assert err.error_class == "too_large"
    assert not list(tmp_path.rglob("*.part"))


def test_html_served_as_video_is_not_video_content(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    page = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>" + b"x" * 5000 + b"</body></html>"
    http_server.add_file("page.mp4", page)  # served as video/mp4, body is HTML
    err = fetch_error(ManifestRow("v", http_server.url("/html/clip.mp4")), tmp_path, fast_cfg())
    assert err.error_class == "not_video_content"  # Content-Type text/html
    err = fetch_error(ManifestRow("w", http_server.url("/files/page.mp4")), tmp_path, fast_cfg())
    assert err.error_class == "not_video_content"  # body sniffed


def test_existing_part_file_is_resumed_with_range(http_server, tmp_path, media):
    http_server.add_file("clip.mp4", media)
    scratch = tmp_path / "scratch"
    part = scratch / "v" / "video.mp4.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(media[:100_000])  # left by a killed worker
    got = fetch(ManifestRow("v", http_server.url("/files/clip.mp4")), scratch, fast_cfg())
    assert Path(got.video_path).read_bytes() == media and not part.exists()
    assert got.info["resumed_from"] == 100_000
    assert http_server.requests[-1][2]["Range"] == "bytes=100000-"

    # A server that ignores Range: the download restarts from zero and is still right.
    part = scratch / "w" / "video.mp4.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 10)
    got = fetch(ManifestRow("w", http_server.url("/norange/clip.mp4")), scratch, fast_cfg())
    assert Path(got.video_path).read_bytes() == media and got.info.get("range_ignored")

    # A .part longer than the file (416): thrown away and fetched again.
    part = scratch / "x" / "video.mp4.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\x00" * (len(media) + 10))
    got = fetch(ManifestRow("x", http_server.url("/files/clip.mp4")), scratch, fast_cfg())
    assert Path(got.video_path).read_bytes() == media


@pytest.mark.parametrize("video_id", ["-rf", "../../etc/passwd", "a b;rm -rf /", "vidéo", "$(id)"])
def test_nasty_ids_stay_inside_scratch(http_server, tmp_path, media, video_id):
    http_server.add_file("clip.mp4", media)
    scratch = tmp_path / "scratch"
    got = fetch(ManifestRow(video_id, http_server.url("/files/clip.mp4")), scratch, fast_cfg())
    assert_inside(got.video_path, scratch)
    assert not Path(got.scratch_dir).name.startswith("-")
    assert {p.name for p in tmp_path.iterdir()} == {"scratch"}  # nothing written beside it
    cleanup(got, fast_cfg())
    assert list(scratch.iterdir()) == []


# ---------------------------------------------------------------------------------------------- config


def test_fetch_config_from_yaml(tmp_path):
    from common.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("retries: 5\nyoutube:\n  max_height: 360\n  rate_limit: 2M\n  caption_languages: [en, de]\n")
    cfg = load_config(FetchConfig, path, ["youtube.proxy=socks5://127.0.0.1:1080"])
    assert cfg.retries == 5 and cfg.youtube.max_height == 360 and cfg.youtube.proxy.startswith("socks5://")
    path.write_text("youtube:\n  rate_limit: fast\n")
    with pytest.raises(ConfigError, match="rate_limit"):
        load_config(FetchConfig, path)


# ---------------------------------------------------------------------------------------------- YouTube


def test_youtube_options(tmp_path):
    from pipeline.sources.fetch_config import parse_rate
    from pipeline.sources.youtube import build_options

    ycfg = YouTubeConfig(max_height=360, cookies_file="cookies.txt", proxy="http://127.0.0.1:3128",
                         rate_limit="1.5M", caption_languages=["en"])
    opts = build_options(ycfg, tmp_path, max_bytes=10**9)
    assert "height<=?360" in opts["format"] and "720" not in opts["format"]
    assert opts["writesubtitles"] and opts["writeautomaticsub"] and opts["subtitleslangs"] == ["en"]
    assert opts["subtitlesformat"] == "vtt" and opts["noplaylist"] is True
    assert opts["cookiefile"] == os.path.abspath("cookies.txt") and opts["proxy"] == "http://127.0.0.1:3128"
    assert opts["ratelimit"] == int(1.5 * 1024**2) == parse_rate("1.5M")
    assert opts["paths"]["home"] == str(tmp_path) and opts["max_filesize"] == 10**9
    assert "/" not in opts["outtmpl"]["default"]  # the file name never comes from the id or title
    assert YouTubeConfig(format="18").format == "18" and build_options(YouTubeConfig(format="18"), tmp_path)["format"] == "18"


def _extractor_error(message: str, video_id: str = "-bcdefghijk"):
    """The DownloadError yt-dlp raises for an extractor failure, built with yt-dlp's own classes."""
    from yt_dlp.utils import DownloadError, ExtractorError

    cause = ExtractorError(message, expected=True, video_id=video_id, ie="youtube")
    return DownloadError(f"ERROR: {cause}", (type(cause), cause, None))


@pytest.mark.parametrize("message,error_class", [
    ("Private video. Sign in if you've been granted access to this video. Use --cookies-from-browser or "
     "--cookies for the authentication.", "youtube_private"),
    ("Video unavailable. This video has been removed by the uploader", "youtube_unavailable"),
    ("Video unavailable", "youtube_unavailable"),
    ("Sign in to confirm your age. This video may be inappropriate for some users.", "youtube_age_restricted"),
    ("Sign in to confirm you’re not a bot. Use --cookies-from-browser or --cookies for the authentication.",
     "youtube_bot_check"),
    ("Login details are needed to download this content. Use --cookies-from-browser or --cookies for the "
     "authentication.", "youtube_login_required"),
    ("Video unavailable. The uploader has not made this video available in your country", "youtube_geo_blocked"),
    ("This video is not available from your location due to geo restriction", "youtube_geo_blocked"),
    ("This live event will begin in 3 hours.", "youtube_live"),
    ("Join this channel to get access to members-only content like this video", "youtube_members_only"),
    ("This content isn't available, try again later. The current session has been rate-limited", "youtube_rate_limited"),
    ("Requested format is not available. Use --list-formats for a list of available formats",
     "youtube_format_unavailable"),
    ("Something odd happened", "youtube_error"),
])
def test_classify_real_ytdlp_errors(message, error_class):
    from pipeline.sources.youtube import classify_ytdlp_error

    error = _extractor_error(message)
    assert "[youtube] -bcdefghijk" in str(error)
    assert classify_ytdlp_error(str(error)) == error_class


def test_youtube_id_never_reaches_a_command_line(tmp_path, monkeypatch):
    from pipeline.media import proc
    from pipeline.sources import youtube as fetch_youtube

    seen = {}

    def record(args, timeout, **kw):
        seen["args"], seen["stdin"] = list(args), kw.get("stdin")
        raise proc.ProcTimeout(args, timeout)

    monkeypatch.setattr(fetch_youtube.proc, "run", record)
    err = fetch_error(ManifestRow("-bcdefghijk", "-bcdefghijk"), tmp_path, fast_cfg())
    assert err.error_class == "youtube_timeout"
    assert not any("bcdefghijk" in a for a in seen["args"])  # only on stdin, as JSON
    assert b'"url": "https://www.youtube.com/watch?v=-bcdefghijk"' in seen["stdin"]


def test_ytdlp_child_downloads_and_classifies(http_server, tmp_path, tiny_mp4):
    """The real yt-dlp child on 127.0.0.1 (generic extractor on an HTML5 page with a <track>):
    video + English VTT, a captions 404 that must not lose the video, a 404 page, and a hang."""
    pytest.importorskip("yt_dlp")
    from pipeline.sources.youtube import build_options, run_ytdlp

    http_server.add_file("clip.mp4", tiny_mp4.read_bytes())
    http_server.add_file("clip.vtt", b"WEBVTT\n\n00:00.000 --> 00:01.000\nhello there\n")

    def run(path, out, timeout=60, **kw):
        opts = build_options(YouTubeConfig(socket_timeout_s=30, retries=0), tmp_path / out)
        return run_ytdlp(http_server.url(path), tmp_path / out, opts, timeout=timeout, **kw)

    result = run("/videopage/clip.mp4/clip.vtt", "ok")
    assert Path(result.video_path).read_bytes() == tiny_mp4.read_bytes()
    assert Path(result.captions_path).name == "video.en.vtt" and "hello there" in Path(result.captions_path).read_text()
    for path in result.files:
        assert_inside(path, tmp_path / "ok")

    result = run("/videopage/clip.mp4/missing.vtt", "nocaps")
    assert Path(result.video_path).read_bytes() == tiny_mp4.read_bytes() and result.captions_path is None
    assert "404" in result.info["youtube_captions_error"]

    with pytest.raises(StageError) as info:
        run("/status/404", "missing")
    assert info.value.error_class == "youtube_unavailable" and "404" in info.value.message

    start = time.monotonic()
    with pytest.raises(StageError) as info:
        run("/slow/120/clip.mp4", "hang", timeout=4, startup_s=0)
    assert info.value.error_class == "youtube_timeout"
    assert time.monotonic() - start < 15
