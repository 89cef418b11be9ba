"""The done-marker that lets a finished job skip an unchanged rerun."""
from __future__ import annotations

import os

from common.donemark import inputs_fingerprint, is_done, mark_done


def test_fingerprint_tracks_config_and_files(tmp_path):
    a = tmp_path / "a.tar"
    a.write_bytes(b"x")
    base = inputs_fingerprint({"threshold": 0.9}, [a])
    assert inputs_fingerprint({"threshold": 0.9}, [a]) == base
    assert inputs_fingerprint({"threshold": 0.8}, [a]) != base
    os.utime(a, ns=(1, 1))
    assert inputs_fingerprint({"threshold": 0.9}, [a]) != base
    assert inputs_fingerprint({"threshold": 0.9}, [a, tmp_path / "missing"]) != inputs_fingerprint({"threshold": 0.9}, [a])


def test_done_only_with_same_fingerprint_and_outputs(tmp_path):
    assert not is_done(tmp_path, "f1")
    (tmp_path / "report.html").write_text("r")
    mark_done(tmp_path, "f1")
    assert is_done(tmp_path, "f1", ["report.html"])
    assert not is_done(tmp_path, "f2", ["report.html"])
    assert not is_done(tmp_path, "f1", ["report.html", "blocklist.txt"])
    (tmp_path / "done.json").write_text("{broken")
    assert not is_done(tmp_path, "f1")
