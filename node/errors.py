"""The node's error vocabulary: one root, and one table for every boundary.

``NodeError`` is the root of what the node itself raises (``ProtocolError``
and ``StorageError`` are the roots below it). Routes, the data plane and the
chunk server raise these domain errors and never spell out a status:
``describe`` looks the error up in ``ERRORS``, which gives each one its HTTP
status, its JSON ``error`` code and its chunk-wire ``ErrorCode``. A code
means one thing and answers one status wherever it appears
(``tests/unit/test_errors.py``).

An error that is not in the table is a bug when it reaches a client: it
answers 500 ``internal_error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from protocols.brc104 import AuthError, HandshakeTooLarge, MalformedAuthMessage
from protocols.chunk_wire import ErrorCode, ErrorReply
from protocols.errors import InvalidUhrpUrl, RemoteProtocolError
from protocols.playlists import PlaylistError
from protocols.quota import Usage, Window, or_none
from protocols.quota_book import UnknownPolicy, UnknownReceipt
from protocols.ranges import Unsatisfiable
from storage.errors import ChunkDamaged, DatabaseUnavailable, Mismatch, StorageFull, TooLarge

__all__ = [
    "NodeError",
    "NotFound",
    "NotHeld",
    "NotAvailable",
    "MethodNotAllowed",
    "BadRequest",
    "InvalidRequest",
    "InvalidReceiptId",
    "InvalidContentType",
    "InvalidContentLength",
    "InvalidPublicKey",
    "ClientDisconnected",
    "RequestTooLarge",
    "HeadersTooLarge",
    "ResponseTooLarge",
    "InsufficientStorage",
    "OverlayDisabled",
    "Unauthenticated",
    "NotYourReceipt",
    "QuotaDenied",
    "RecordsFull",
    "StreamingConfigTooLarge",
    "AgentStreamingDisabled",
    "UnknownSession",
    "SessionNotYours",
    "WrongContent",
    "ReceiptMismatch",
    "AgentNotYours",
    "OperatorOnly",
    "NotAllowed",
    "NotGranted",
    "NotProtected",
    "ReceiptRequired",
    "ReceiptBound",
    "Busy",
    "ShuttingDown",
    "UnknownJob",
    "JobFinished",
    "InvalidLadder",
    "PeerUnreachable",
    "StreamClosed",
    "MirrorFailed",
    "MirrorRefused",
    "RemoteError",
    "IdentityError",
    "AddressInUse",
    "HomeBusy",
    "Rule",
    "Failure",
    "ERRORS",
    "rule_for",
    "describe",
]


class NodeError(Exception):
    """Root of every error the node raises itself."""

    retry_after_s: float = 0.0  # > 0: when the same request may succeed (HTTP Retry-After)

    def details(self) -> dict[str, object]:
        """Fields of the JSON error body beyond ``error`` and ``message``."""
        return {}


# -- lookups -------------------------------------------------------------------


class NotFound(NodeError):
    """No such path, or nothing by that name."""


class NotHeld(NotFound):
    """The content is not held by this node."""


class NotAvailable(NotHeld):
    """Not held here, and no host could provide it."""


class MethodNotAllowed(NodeError):
    pass


class OverlayDisabled(NodeError):
    """The node is not on an overlay (``uhrp.enabled = false``)."""


# -- bad requests --------------------------------------------------------------


class BadRequest(NodeError):
    """A request (HTTP or chunk wire) that cannot be served as asked."""


class InvalidRequest(NodeError):
    """A request that fails validation (the fields are in ``details``)."""

    def __init__(self, message: str, fields: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.fields = fields

    def details(self) -> dict[str, object]:
        return {"details": self.fields}


class InvalidReceiptId(NodeError):
    pass


class InvalidLadder(BadRequest):
    """A transcode asked for a ladder the node will not encode."""


class NotProtected(NotFound):
    """Not protected content whose key this node holds."""


class UnknownJob(NotFound):
    """No transcode job by that id."""


class JobFinished(NodeError):
    """The transcode job has ended: there is nothing to cancel."""


class InvalidContentType(NodeError):
    pass


class InvalidContentLength(NodeError):
    pass


class InvalidPublicKey(NodeError):
    pass


class ClientDisconnected(NodeError):
    """The request body ended early."""


class RequestTooLarge(NodeError):
    """A request body over its limit."""


class HeadersTooLarge(NodeError):
    """A request's headers over the HTTP server's limit."""


class ResponseTooLarge(NodeError):
    """A response too large to sign whole (BRC-104)."""


class StreamingConfigTooLarge(NodeError):
    pass


# -- resources -----------------------------------------------------------------


class InsufficientStorage(NodeError):
    """The content does not fit on the disk."""


class RecordsFull(NodeError):
    """No room for another policy or receipt."""


class Busy(NodeError):
    """Too much at once from this peer; try again later."""

    retry_after_s = 1.0


class ShuttingDown(NodeError):
    """The node is stopping: it takes no new work."""

    retry_after_s = 5.0


# -- who may do what ------------------------------------------------------------


class Unauthenticated(NodeError):
    """The node requires BRC-103/104 authentication and the request has none."""


class NotYourReceipt(NodeError):
    """The receipt is bound to another identity key."""


class AddressBlocked(NodeError):
    """The receipt's policy blocks the client's address (``blocked_ip_ranges``)."""


class RegionNotAllowed(NodeError):
    """The receipt's policy does not allow the reader's region (``allowed_regions``)."""


class SessionNotYours(NodeError):
    pass


class AgentNotYours(NodeError):
    """An agent's analytics belong to another identity."""


class ReceiptRequired(NodeError):
    """The node charges every read to a receipt, and this one names none."""


class OperatorOnly(NodeError):
    """Only the node's operator (its own identity, or one of ``api.operator_keys``) may do this."""


class NotAllowed(NodeError):
    """Authenticated, but not granted this protected content."""


class NotGranted(NotAllowed):
    """A host refused this node a content's key: it is not (or no longer) granted it."""


class ReceiptBound(NodeError):
    """The receipt id is bound to another identity; the operator re-binds it explicitly."""


# -- quotas and sessions ---------------------------------------------------------


class QuotaDenied(NodeError):
    """A request does not fit its receipt's quota."""

    def __init__(self, reason: str, retry_after_s: float, remaining: Mapping[Window, Usage] | None = None) -> None:
        super().__init__(f"the receipt's quota does not allow this request ({reason})")
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.remaining = dict(remaining or {})

    def details(self) -> dict[str, object]:
        return {
            "reason": self.reason,
            "retryAfterSeconds": round(self.retry_after_s, 3),
            "remaining": {
                k.value: {"bytes": or_none(u.bytes), "requests": or_none(u.requests)} for k, u in self.remaining.items()
            },
        }


class AgentStreamingDisabled(NodeError):
    pass


class UnknownSession(NodeError):
    pass


class WrongContent(NodeError):
    """A session read of content other than the session's."""


class ReceiptMismatch(NodeError):
    """A session read that names a receipt other than the session's."""


# -- peers (internal: a download turns these into NotAvailable) -------------------


class PeerUnreachable(NodeError):
    """Could not connect to, or open a stream with, a peer in time."""


class StreamClosed(NodeError):
    """The stream broke (reset or connection lost) while writing."""


class RemoteError(NodeError):
    """A peer answered a chunk-wire request with a typed error."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"{reply.code.name.lower()}: {reply.message}")
        self.reply = reply


class MirrorFailed(NodeError):
    """An HTTP(S) mirror did not answer with the bytes asked for, in time."""


class MirrorRefused(NodeError):
    """A mirror URL nobody trusted named a loopback or private address."""


# -- the home (the CLI reports these) ----------------------------------------------


class IdentityError(NodeError):
    """The key file is missing, unreadable, malformed or too widely readable."""


class HomeBusy(NodeError):
    """Another process is writing to this home."""


class AddressInUse(NodeError):
    """A port the node would listen on is held by another process."""


# -- the table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    status: int
    code: str | None  # None: the error's own ``code`` (BRC-103/104 failures carry theirs)
    wire: ErrorCode


_NF, _BAD, _AUTH = ErrorCode.NOT_FOUND, ErrorCode.BAD_REQUEST, ErrorCode.UNAUTHORISED

# Most specific class first is not needed: ``describe`` walks each error's MRO.
ERRORS: dict[type[Exception], Rule] = {
    # 400: the request is wrong
    BadRequest: Rule(400, "bad_request", _BAD),
    RemoteProtocolError: Rule(400, "bad_request", _BAD),
    InvalidUhrpUrl: Rule(400, "invalid_content_id", _BAD),
    InvalidReceiptId: Rule(400, "invalid_receipt_id", _BAD),
    InvalidContentType: Rule(400, "invalid_content_type", _BAD),
    InvalidContentLength: Rule(400, "invalid_content_length", _BAD),
    InvalidPublicKey: Rule(400, "invalid_public_key", _BAD),
    ClientDisconnected: Rule(400, "client_disconnected", _BAD),
    StreamingConfigTooLarge: Rule(400, "streaming_config_too_large", _BAD),
    InvalidLadder: Rule(400, "invalid_ladder", _BAD),
    WrongContent: Rule(400, "wrong_content", _BAD),
    ReceiptMismatch: Rule(400, "receipt_mismatch", _BAD),
    MalformedAuthMessage: Rule(400, None, _BAD),
    # 401, 403: who is asking
    AuthError: Rule(401, None, _AUTH),
    Unauthenticated: Rule(401, "unauthenticated", _AUTH),
    NotYourReceipt: Rule(403, "receipt_not_yours", _AUTH),
    AddressBlocked: Rule(403, "address_blocked", _AUTH),
    RegionNotAllowed: Rule(403, "region_not_allowed", _AUTH),
    SessionNotYours: Rule(403, "session_not_yours", _AUTH),
    AgentNotYours: Rule(403, "agent_not_yours", _AUTH),
    OperatorOnly: Rule(403, "operator_only", _AUTH),
    ReceiptRequired: Rule(403, "receipt_required", _AUTH),
    MirrorRefused: Rule(403, "mirror_refused", _AUTH),
    NotAllowed: Rule(403, "not_allowed", _AUTH),
    # 404, 405: nothing by that name
    NotFound: Rule(404, "not_found", _NF),
    UnknownReceipt: Rule(404, "unknown_receipt", _AUTH),
    UnknownPolicy: Rule(404, "unknown_policy", _AUTH),
    UnknownSession: Rule(404, "unknown_session", _NF),
    UnknownJob: Rule(404, "unknown_job", _NF),
    NotProtected: Rule(404, "not_protected", _NF),
    OverlayDisabled: Rule(404, "overlay_disabled", _NF),
    AgentStreamingDisabled: Rule(404, "agent_streaming_disabled", _NF),
    MethodNotAllowed: Rule(405, "method_not_allowed", _BAD),
    ReceiptBound: Rule(409, "receipt_bound", _BAD),
    JobFinished: Rule(409, "job_finished", _BAD),
    # 413, 416, 422, 429: what was asked for does not fit
    TooLarge: Rule(413, "too_large", _BAD),
    RequestTooLarge: Rule(413, "too_large", _BAD),
    HandshakeTooLarge: Rule(413, "too_large", _BAD),
    ResponseTooLarge: Rule(413, "response_too_large", _BAD),
    HeadersTooLarge: Rule(431, "headers_too_large", _BAD),
    Unsatisfiable: Rule(416, "range_not_satisfiable", _BAD),
    InvalidRequest: Rule(422, "invalid_request", _BAD),
    PlaylistError: Rule(422, "not_a_rendition_set", _BAD),
    QuotaDenied: Rule(429, "quota_exceeded", ErrorCode.QUOTA_EXCEEDED),
    # 5xx: the node or the overlay cannot serve it now
    ChunkDamaged: Rule(503, "content_damaged", _NF),  # a chunk is quarantined until it is fetched again
    Mismatch: Rule(502, "fetch_failed", _NF),
    Busy: Rule(503, "busy", ErrorCode.BUSY),
    ShuttingDown: Rule(503, "shutting_down", ErrorCode.BUSY),
    InsufficientStorage: Rule(507, "insufficient_storage", _BAD),
    StorageFull: Rule(507, "insufficient_storage", _BAD),
    DatabaseUnavailable: Rule(503, "database_unavailable", ErrorCode.BUSY),  # reads of what is held go on
    RecordsFull: Rule(507, "too_many_records", _BAD),
}

_INTERNAL = Rule(500, "internal_error", _BAD)


@dataclass(frozen=True)
class Failure:
    """An error as every boundary presents it."""

    status: int
    code: str
    message: str
    wire: ErrorCode
    details: dict[str, object]
    retry_after_s: float

    def body(self) -> dict[str, object]:
        """The JSON error body: always ``error`` and ``message``, sometimes more."""
        return {"error": self.code, "message": self.message, **self.details}


def rule_for(error: BaseException | type[BaseException]) -> Rule:
    """The table's rule for an error (or an error class): the nearest class in its MRO."""
    for klass in (error if isinstance(error, type) else type(error)).__mro__:
        if (rule := ERRORS.get(klass)) is not None:
            return rule
    return _INTERNAL


def describe(exc: BaseException) -> Failure:
    rule = rule_for(exc)
    code = rule.code or str(getattr(exc, "code", "error"))
    if isinstance(exc, NodeError):
        return Failure(rule.status, code, str(exc), rule.wire, exc.details(), exc.retry_after_s)
    return Failure(rule.status, code, str(exc), rule.wire, {}, 0.0)
