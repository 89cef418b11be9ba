"""Working from a leakage report folder, without recomputing anything:

    python -m dedup review --report DIR [--port 8765]        # the review page, decisions saved beside it
    python -m dedup blocklist --report DIR [--decisions FILE] [--undecided block|keep]

`review` is a small local HTTP server (stdlib http.server), bound to 127.0.0.1 only: it serves DIR (report.html,
thumbs/, the JSON files) and answers GET/POST /api/decisions. A POST is the page's decisions; they are folded
into DIR/decisions.json, written whole (temp file then rename), and blocklist.txt and report.html are rebuilt
from them at once. Why a server rather than only a download: the browser cannot write beside the page, and a
downloaded file has to be moved into place by hand; the server puts it there atomically and rebuilds the
blocklist in the same step. The download remains for a report opened as a file (copied off a cluster):
`blocklist --decisions FILE` folds it in. Requests whose Host or Origin is not this server are refused, so
another web page cannot write decisions through it (DNS rebinding, cross-site POST).

`blocklist` rebuilds blocklist.txt (and report.html, summary.json's counts) from report.json + decisions.json;
DIR may be an fsspec URL. Both print one-line errors and exit 1 when DIR is not a report folder.
"""
from __future__ import annotations

import argparse
import errno
import functools
import json
import signal
import sys
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from common import storage
from dedup import decisions as dec
from dedup.locations import write_json
from dedup.rows import video_rows
from dedup.thumbs import existing, wanted_names

MAX_POST = 64 << 20  # a page's decisions: ~150 bytes a row


class ReviewError(RuntimeError):
    """DIR cannot be reviewed (one line)."""


@dataclass
class Report:
    dir: str
    summary: dict
    pairs: list[dict]
    rows: list[dict]
    report_id: str
    identity: dict


def load_report(report_dir: str) -> Report:
    try:
        summary = storage.read_json(storage.join(report_dir, "summary.json"))
        pairs = storage.read_json(storage.join(report_dir, "report.json"))
    except FileNotFoundError:
        raise ReviewError(f"{storage.redact(report_dir)} is not a leakage report folder (no summary.json / "
                          "report.json): give the leakage job's output.dir") from None
    except (OSError, ValueError, storage.StorageError) as exc:
        raise ReviewError(f"{storage.redact(report_dir)}: cannot read its report ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    identity = dec.report_identity(summary)
    rid = summary.get("report_id") or dec.report_id(identity)  # reports from before decisions: same rule
    summary["report_id"] = rid
    return Report(dir=report_dir, summary=summary, pairs=pairs, rows=video_rows(pairs), report_id=rid, identity=identity)


def refresh(report: Report, decided: dec.Decisions, undecided: bool | None = None) -> dict:
    """blocklist.txt, summary.json's blocklist counts and report.html from the decisions (no features)."""
    from dedup.report import write_report

    settings = report.summary.get("blocklist") or {}
    unit = settings.get("unit", "video")
    block_undecided = settings.get("block_undecided", True) if undecided is None else undecided
    _, counts = dec.write(report.dir, report.summary, report.rows, decided, unit, block_undecided)
    report.summary["blocked"] = counts["entries"]
    report.summary["blocklist"] = {"unit": unit, "block_undecided": block_undecided, **counts}
    write_json(storage.join(report.dir, "summary.json"), report.summary)
    write_report(report.dir, report.pairs, report.summary, decided)
    return counts


def saved_message(counts: dict, path: str) -> str:
    return (f"saved to {path}: {counts['leak']} leak, {counts['not_leak']} not a leak, {counts['unsure']} unsure, "
            f"{counts['undecided']} undecided; blocklist.txt rebuilt: {counts['entries']} entries")


# ---- python -m dedup blocklist ----------------------------------------------------------------------------
def blocklist_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup blocklist",
                                     description="Rebuild blocklist.txt of a leakage report from its decisions.json.")
    parser.add_argument("--report", required=True, help="the leakage job's output.dir (a folder or an fsspec URL)")
    parser.add_argument("--decisions", help="a decisions.json downloaded from the page: folded in first (its "
                                            "decisions win; the file must belong to this report)")
    parser.add_argument("--undecided", choices=("block", "keep"),
                        help="undecided and unsure pairs: block them or keep them in training (default: the run's "
                             "output.blocklist_undecided, or the last --undecided given)")
    args = parser.parse_args(argv)
    try:
        report = load_report(args.report)
        decided = dec.load(report.dir, report.report_id, report.identity)
        for note in decided.notes:
            print(f"note: {note}")
        if args.decisions:
            merge_file(decided, args.decisions)
            dec.save(report.dir, decided)
        undecided = None if args.undecided is None else args.undecided == "block"
        counts = refresh(report, decided, undecided)
    except (ReviewError, dec.DecisionsError, storage.StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    head = dec.blocklist_header(report.summary, report.rows, counts, report.summary["blocklist"]["block_undecided"])
    print("\n".join(head[1:3]))
    print(f"blocklist: {storage.redact(storage.join(report.dir, 'blocklist.txt'))}")
    return 0


def merge_file(decided: dec.Decisions, path: str) -> None:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise dec.DecisionsError(f"--decisions {path}: cannot read it ({exc.strerror})") from None
    parsed = dec.parse(data, path)
    if parsed["report_id"] != decided.report_id:
        raise dec.DecisionsError(f"{path} belongs to report {parsed['report_id']} (model "
                                 f"{parsed['report'].get('model', '?')}), this folder holds {decided.report_id}: "
                                 "nothing changed")
    for key in parsed["cleared"]:
        decided.entries.pop(key, None)
    decided.entries.update(parsed["entries"])


# ---- python -m dedup review -------------------------------------------------------------------------------
class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, report_dir: Path, port: int):
        self.report_dir = report_dir
        self.lock = threading.Lock()  # one save at a time: load, fold in, write, rebuild
        self.missing_reported: set[str] = set()
        super().__init__(("127.0.0.1", port), functools.partial(Handler, directory=str(report_dir)))

    @property
    def origins(self) -> set[str]:
        port = self.server_address[1]
        return {f"127.0.0.1:{port}", f"localhost:{port}"}


class Handler(SimpleHTTPRequestHandler):
    server: ReviewServer

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _trusted(self) -> bool:
        """Only pages of this server: another site (or a DNS name rebound to 127.0.0.1) gets a 403."""
        origin = self.headers.get("Origin")
        if self.headers.get("Host") not in self.server.origins or (
                origin is not None and urlsplit(origin).netloc not in self.server.origins):
            self._reply(403, {"error": "requests to the review server must come from its own page"})
            return False
        return True

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # report.html is rebuilt on every save
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        if not self._trusted():
            return
        path = urlsplit(self.path).path
        if path in ("/", ""):
            self.send_response(302)
            self.send_header("Location", "/report.html")
            self.end_headers()
            return
        if path == "/api/decisions":
            try:
                report = load_report(str(self.server.report_dir))
                with self.server.lock:
                    decided = dec.load(report.dir, report.report_id, report.identity)
            except ReviewError as exc:
                return self._reply(500, {"error": str(exc)})
            for note in decided.notes:
                print(f"note: {note}", flush=True)
            return self._reply(200, {"report_id": report.report_id,
                                     "decisions": [decided.entries[k] for k in sorted(decided.entries)]})
        super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        if not self._trusted():
            return
        if urlsplit(self.path).path != "/api/decisions":
            return self._reply(404, {"error": "only /api/decisions takes a POST"})
        if "application/json" not in (self.headers.get("Content-Type") or ""):
            return self._reply(415, {"error": "decisions are sent as application/json"})
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_POST:
            return self._reply(413, {"error": f"a decisions POST is 1 byte to {MAX_POST} bytes, got {length}"})
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise dec.DecisionsError("the POST body must be an object {report_id, decisions}")
            with self.server.lock:
                report = load_report(str(self.server.report_dir))
                if body.get("report_id") != report.report_id:
                    return self._reply(409, {"error": f"this page belongs to report {body.get('report_id')}, the folder "
                                                      f"now holds {report.report_id} (the leakage job ran again): reload"})
                decided = dec.load(report.dir, report.report_id, report.identity)
                changed = dec.apply(decided, body.get("decisions"), report.rows)
                path = dec.save(report.dir, decided)
                counts = refresh(report, decided)
        except (ValueError, dec.DecisionsError) as exc:
            return self._reply(400, {"error": str(exc).splitlines()[0]})
        except (ReviewError, OSError) as exc:
            return self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})
        message = saved_message(counts, "decisions.json")
        print(f"{message} ({changed} changed)", flush=True)
        self._reply(200, {"message": message, "changed": changed, "path": path, "counts": counts})

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        pass  # a line per thumbnail would bury what matters; errors are said by log_error / send_error

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        path = urlsplit(self.path).path
        if code == 404 and path not in self.server.missing_reported:
            self.server.missing_reported.add(path)
            what = "thumbnail" if path.startswith("/thumbs/") else "file"
            print(f"missing {what} {path.lstrip('/')} (the page shows 'thumbnail missing' there)", flush=True)
        super().send_error(code, message, explain)


def startup_notes(report: Report) -> list[str]:
    notes = []
    strip_rows = int(report.summary.get("strip_rows") or len(report.rows))
    names = wanted_names(report.rows[:strip_rows])
    missing = sorted(names - existing(report.dir))
    if missing:
        notes.append(f"{len(missing)} of {len(names)} thumbnails are missing (e.g. {missing[0]}): those frames show "
                     "'no frame'; rerun the leakage job to make them again")
    shards = sorted({p.get("corpus_shard") for p in report.pairs if p.get("corpus_shard")})
    gone = [s for s in shards[:2000] if storage.is_local(s) and not Path(s).exists()]
    if gone:
        notes.append(f"{len(gone)} corpus shards named in report.json no longer exist (e.g. {gone[0]}): their rows "
                     "stay reviewable (the thumbnails were made at run time) and their decisions are kept")
    return notes


def review_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup review",
                                     description="Serve a leakage report on 127.0.0.1 and save the decisions made in it.")
    parser.add_argument("--report", required=True, help="the leakage job's output.dir (a local folder)")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    if not storage.is_local(args.report):
        print(f"error: --report {storage.redact(args.report)} is a URL: the review server needs a local folder "
              "(copy it down, or review the downloaded page and use python -m dedup blocklist --decisions)",
              file=sys.stderr)
        return 1
    report_dir = storage.local_path(args.report).resolve()
    try:
        report = load_report(str(report_dir))
        decided = dec.load(report.dir, report.report_id, report.identity)
    except ReviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        server = ReviewServer(report_dir, args.port)
    except OSError as exc:
        why = "is in use (another review server?): --port 0 picks a free one" if exc.errno == errno.EADDRINUSE \
            else f"cannot be opened ({exc.strerror})"
        print(f"error: port {args.port} on 127.0.0.1 {why}", file=sys.stderr)
        return 1
    for note in decided.notes + startup_notes(report):
        print(f"note: {note}")
    port = server.server_address[1]
    print(f"review: http://127.0.0.1:{port}/report.html  ({len(report.rows)} video pairs, {len(decided.entries)} "
          f"decided; saving writes {report_dir / dec.FILE} and rebuilds blocklist.txt; Ctrl-C stops)", flush=True)

    def stop(signum, frame):  # SIGTERM (a test, a supervisor): leave serve_forever and close the socket
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
