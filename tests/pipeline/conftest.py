"""Fixtures for pipeline tests: a local HTTP server on 127.0.0.1 and small generated media files."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.pipeline.http_fixture import LocalHTTPServer, closed_port


@pytest.fixture
def http_server():
    """A fresh `LocalHTTPServer` (see tests/pipeline/http_fixture.py for its endpoints)."""
    server = LocalHTTPServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unused_port() -> int:
    """A 127.0.0.1 port nothing listens on."""
    return closed_port()


@pytest.fixture(scope="session")
def tiny_mp4(tmp_path_factory) -> Path:
    """A 1-second 64x48 H.264 + AAC mp4 made with ffmpeg (a few KB)."""
    from pipeline.media import proc

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    path = tmp_path_factory.mktemp("media") / "tiny.mp4"
    proc.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
              "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "1", "-c:v", "libx264",
              "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], timeout=60, check=True)
    return path
