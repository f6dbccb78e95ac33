"""Schemathesis against a running daemon: every operation in /openapi.json,
fed generated (valid and invalid) input, never answers 5xx and never strays
from what the document declares (status codes, content types, bodies)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.core.result import Ok

from node.cli.launcher import Daemon


def test_every_operation_holds_to_its_schema(shared_daemon: Daemon) -> None:
    # Driven through hypothesis directly: schemathesis' pytest plugin does
    # not run under pytest 9 ('Function' object has no attribute '_nodeid').
    schema = schemathesis.openapi.from_url(f"{shared_daemon.api.rstrip('/')}/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Case) -> None:  # type: ignore[type-arg]
            # Not "positive data acceptance": a string the schema allows can
            # still be a bad UHRP URL (checksum) or an unknown receipt, and
            # is rightly refused with a 4xx.
            case.call_and_validate(timeout=30, excluded_checks=[schemathesis.checks.positive_data_acceptance])

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
