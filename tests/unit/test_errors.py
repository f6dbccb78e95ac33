"""The one error table: every code means one status, everywhere."""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict

import protocols.brc104 as brc104
from node import errors
from node.errors import ERRORS, NodeError, QuotaDenied, describe, rule_for
from protocols.chunk_wire import ErrorCode
from protocols.quota import Usage, Window
from protocols.quota_book import UnknownPolicy, UnknownReceipt

# Raised between the node's own parts; a download or the CLI turns them into
# something else, so they never reach a client as themselves.
INTERNAL = {
    errors.PeerUnreachable,
    errors.StreamClosed,
    errors.RemoteError,
    errors.MirrorFailed,
    errors.IdentityError,
    errors.HomeBusy,
    errors.AddressInUse,
}


def _auth_codes() -> set[tuple[type[Exception], str]]:
    """(class, code) for every BRC-103/104 failure ``protocols.brc104`` raises."""
    classes = {k.__name__: k for k in (brc104.AuthError, brc104.MalformedAuthMessage, brc104.HandshakeTooLarge)}
    found: set[tuple[type[Exception], str]] = set()
    for node in ast.walk(ast.parse(inspect.getsource(brc104))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in classes:
            code = node.args[0]
            assert isinstance(code, ast.Constant) and isinstance(code.value, str), ast.unparse(node)
            found.add((classes[node.func.id], code.value))
    return found


def test_every_code_answers_one_status() -> None:
    statuses: defaultdict[str, set[int]] = defaultdict(set)
    for rule in ERRORS.values():
        if rule.code is not None:
            statuses[rule.code].add(rule.status)
    auth = _auth_codes()
    assert len(auth) > 10  # the walk found brc104's raises
    for klass, code in auth:
        statuses[code].add(rule_for(klass).status)
    assert {code: s for code, s in statuses.items() if len(s) > 1} == {}


def test_every_node_error_that_can_reach_a_client_has_a_row() -> None:
    def subclasses(k: type[Exception]) -> set[type[Exception]]:
        return {k}.union(*(subclasses(sub) for sub in k.__subclasses__()))

    unlisted = {k for k in subclasses(NodeError) - {NodeError} if rule_for(k).code == "internal_error"}
    assert unlisted == INTERNAL


def test_a_bug_answers_500_and_still_in_the_one_shape() -> None:
    failure = describe(KeyError("x"))
    assert (failure.status, failure.code) == (500, "internal_error")
    assert set(failure.body()) == {"error", "message"}


def test_a_subclass_inherits_its_parents_row_unless_it_has_its_own() -> None:
    assert (
        describe(errors.NotAvailable("gone")).status == 404
        and describe(errors.NotAvailable("gone")).code == "not_found"
    )
    assert (
        describe(UnknownPolicy("p")).code == "unknown_policy"
        and describe(UnknownReceipt("r")).code == "unknown_receipt"
    )


def test_the_wire_codes_peers_rely_on() -> None:
    assert rule_for(errors.NotHeld).wire == ErrorCode.NOT_FOUND
    assert rule_for(UnknownReceipt).wire == rule_for(errors.NotYourReceipt).wire == ErrorCode.UNAUTHORISED
    assert rule_for(QuotaDenied).wire == ErrorCode.QUOTA_EXCEEDED
    assert rule_for(errors.Busy).wire == ErrorCode.BUSY
    assert rule_for(errors.BadRequest).wire == ErrorCode.BAD_REQUEST


def test_a_quota_refusal_says_why_and_when() -> None:
    failure = describe(QuotaDenied("bytes_per_hour", 12.5, {Window.HOUR: Usage(3, 1)}))
    assert (failure.status, failure.code, failure.retry_after_s) == (429, "quota_exceeded", 12.5)
    assert failure.body() == {
        "error": "quota_exceeded",
        "message": "the receipt's quota does not allow this request (bytes_per_hour)",
        "reason": "bytes_per_hour",
        "retryAfterSeconds": 12.5,
        "remaining": {"hour": {"bytes": 3, "requests": 1}},
    }
