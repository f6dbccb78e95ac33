"""The node's logs: human lines on a terminal or one JSON object per line,
each carrying the request id or the peer it concerns, and an access log.

Lines are written by one thread, in batches (at most every ``_BATCH_S``):
a slow terminal or log pipe never stalls the event loop, and a busy node
pays for one write and one thread wake-up per batch, not per line. Access
lines are formatted where the request ends, straight to text, without a
``LogRecord`` (a line per request is the hot path: measured in
``docs/benchmarks.md``). Past ``_QUEUED`` lines waiting, lines are dropped
(and counted), never memory grown.

What is logged is chosen so no secret is: the access log writes the path
without its query (only a receipt id is taken from it), never a header, so
BRC-104 signatures, nonces and the observer token stay out.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TextIO
from urllib.parse import quote

__all__ = [
    "REQUEST_ID",
    "PEER",
    "RequestLog",
    "access",
    "configure_logging",
    "flush_logs",
    "dropped_lines",
    "JsonFormatter",
    "TextFormatter",
]

# Set while a request is handled (``node.http.app``) or a peer's stream served (``node.p2p``).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
PEER: contextvars.ContextVar[str | None] = contextvars.ContextVar("peer", default=None)

_QUEUED = 10_000  # lines waiting for the writer thread, at most
_BATCH_S = 0.05  # the writer gathers what comes this long before writing it at once
_FIELD_CHARS = 512  # of a path, method or receipt id in an access line, at most


@dataclass(slots=True)
class RequestLog:
    """What the access line of one request says; filled in as it is handled
    (the authentication layer adds the identity)."""

    method: str
    path: str
    client: str
    started: float
    status: int = 0
    bytes: int = 0
    identity: str | None = None
    receipt: str | None = None
    route: str = ""  # the route's template (a metrics label), once known


_make_record = logging.getLogRecordFactory()


def _record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every record carries the request id and peer of where it was made
    (it is written later, by another thread)."""
    record = _make_record(*args, **kwargs)
    record.request_id = REQUEST_ID.get()
    record.peer = PEER.get()
    return record


logging.setLogRecordFactory(_record)


def _tags(request_id: str | None, peer: str | None) -> str:
    tags = " ".join(t for t in (request_id and f"req {request_id}", peer and f"peer {peer}") if t)
    return f" [{tags}]" if tags else ""


class TextFormatter(logging.Formatter):
    """``2026-12-07 14:30:00,123 INFO overlay_node.http [req 1f2e]: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(tags)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.tags = _tags(getattr(record, "request_id", None), getattr(record, "peer", None))
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the
    request id and peer when there are some."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "peer"):
            if (value := getattr(record, name, None)) is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _clean(text: str) -> str:
    """A client's text as one harmless token: percent-encoded (no newline,
    quote or terminal escape can forge or colour a line), and cut short (a
    queued line stays small)."""
    return quote(text[:_FIELD_CHARS], safe="/:@!$&'()*+,;=-._~")


def _access_text(r: RequestLog, now: float, duration_ms: float, request_id: str | None) -> str:
    receipt = f" receipt={_clean(r.receipt)}" if r.receipt else ""
    who = (f" identity={r.identity[:16]}" if r.identity else "") + receipt
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now * 1000) % 1000:03d}"
    return (
        f"{stamp} INFO overlay_node.access{_tags(request_id, None)}: "
        f'{r.client} "{_clean(r.method)} {_clean(r.path)}" {r.status} {r.bytes} {duration_ms:.1f}ms{who}'
    )


def _access_json(r: RequestLog, now: float, duration_ms: float, request_id: str | None) -> str:
    doc: dict[str, Any] = {"time": _iso(now), "level": "info", "logger": "overlay_node.access"}
    if request_id is not None:
        doc["request_id"] = request_id
    doc |= {"client": r.client, "method": r.method[:_FIELD_CHARS], "path": r.path[:_FIELD_CHARS]}
    doc |= {"status": r.status, "bytes": r.bytes}
    doc["duration_ms"] = duration_ms
    if r.identity:
        doc["identity"] = r.identity
    if r.receipt:
        doc["receipt"] = r.receipt[:_FIELD_CHARS]
    return json.dumps(doc, separators=(",", ":"))


class _Writer:
    """The thread that writes the process's log lines, a batch at a time."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.queue: queue.Queue[str | logging.LogRecord | None] = queue.Queue(_QUEUED)
        self.dropped = 0
        self.formatter: logging.Formatter = TextFormatter()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def put(self, item: str | logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is not None:
                time.sleep(_BATCH_S)  # let a busy node's lines gather: one write, one wake-up
            batch = [first]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            lines = [item if isinstance(item, str) else self._format(item) for item in batch if item is not None]
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # the stream is gone (closed pipe): nothing to write to
                    pass
            if None in batch:
                return

    def _format(self, record: logging.LogRecord) -> str:
        try:
            return self.formatter.format(record)
        except Exception as exc:  # a bad format string in some library: say so, do not die
            return f"(unformattable log record from {record.name}: {exc!r})"

    def stop(self, timeout_s: float) -> None:
        """Write what is queued (waiting at most ``timeout_s``), then end."""
        try:
            self.queue.put(None, timeout=timeout_s)
        except queue.Full:  # the writer is stuck (a blocked pipe): leave it
            return
        self._thread.join(timeout_s)


class _ToWriter(logging.Handler):
    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.message = record.getMessage()  # while its arguments are what they were
            record.msg, record.args = record.message, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None  # the traceback holds frames; its text is enough
        except Exception:  # a bad log call (wrong arguments) must not raise into the code that made it
            self.handleError(record)
            return
        self.writer.put(record)


_writer: _Writer | None = None
_access_format: Callable[[RequestLog, float, float, str | None], str] | None = None  # while the access log is on


def access(r: RequestLog) -> None:
    """The access log line of a finished request (when the access log is on)."""
    if _access_format is None or _writer is None:
        return
    now = time.time()
    duration_ms = round((time.perf_counter() - r.started) * 1000, 1)
    _writer.put(_access_format(r, now, duration_ms, REQUEST_ID.get()))


def dropped_lines() -> int:
    """Log lines dropped because the writer was that far behind."""
    return _writer.dropped if _writer is not None else 0


def flush_logs(timeout_s: float) -> None:
    """Write what is queued, waiting at most ``timeout_s`` (at exit)."""
    global _writer
    if _writer is not None:
        _writer.stop(timeout_s)
        _writer = None


atexit.register(flush_logs, 5.0)


def configure_logging(
    fmt: Literal["text", "json"], *, verbose: bool = False, access_log: bool = True, stream: TextIO = sys.stderr
) -> None:
    """The process's logging: lines in the chosen format on ``stream``."""
    global _writer, _access_format
    flush_logs(5.0)
    _writer = _Writer(stream)
    _writer.formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    _access_format = (_access_json if fmt == "json" else _access_text) if access_log else None
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(_ToWriter(_writer))
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("libp2p").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # Its every reconnection attempt is a warning; the store logs an outage's start and end.
    logging.getLogger("psycopg.pool").setLevel(logging.DEBUG if verbose else logging.ERROR)
