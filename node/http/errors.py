"""Errors as HTTP answers, in one JSON shape (``models.ErrorBody``).

Statuses and codes come from the one table, ``node.errors.ERRORS``; this
module only writes them out, for the raw ASGI paths (the data plane, auth)
and for FastAPI's routes alike.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from node.errors import BadRequest, InvalidRequest, MethodNotAllowed, NodeError, NotFound, describe, rule_for
from node.http.models import ErrorBody
from protocols.errors import ProtocolError
from storage import StorageError

__all__ = ["Send", "Headers", "send_json", "send_error", "install_handlers", "documented"]

log = logging.getLogger("overlay_node.http")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


def _answer(exc: BaseException) -> tuple[int, dict[str, object], Headers]:
    failure = describe(exc)
    headers: Headers = []
    if failure.retry_after_s > 0:
        headers.append((b"retry-after", str(math.ceil(failure.retry_after_s)).encode()))
    return failure.status, failure.body(), headers


async def send_json(
    send: Send, status: int, body: dict[str, object], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, exc: BaseException, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer a raw ASGI request with ``exc`` as its error."""
    status, body, extra = _answer(exc)
    await send_json(send, status, body, [*extra, *headers])


def _response(exc: BaseException) -> JSONResponse:
    status, body, headers = _answer(exc)
    return JSONResponse(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})


# What FastAPI and Starlette raise themselves: no route (404), no such method
# (405), a body that could not be read (400).
_FRAMEWORK: dict[int, type[NodeError]] = {404: NotFound, 405: MethodNotAllowed}


def install_handlers(app: FastAPI) -> None:
    """Every error a route raises, and FastAPI's own, answered in the one shape."""

    async def domain(_: Request, exc: Exception) -> JSONResponse:
        return _response(exc)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details: list[dict[str, object]] = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details)  # type: ignore[call-overload]
        return _response(InvalidRequest(message, details))

    async def http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error = _FRAMEWORK.get(exc.status_code, BadRequest)(str(exc.detail))
        response = _response(error)
        response.headers.update(exc.headers or {})
        return response

    async def bug(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return _response(exc)  # 500 internal_error

    for root in (NodeError, ProtocolError, StorageError):
        app.add_exception_handler(root, domain)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, bug)


def documented(*errors: type[Exception], **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the errors a route may raise, by their statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for klass in errors:
        status = rule_for(klass).status
        text = descriptions.get(klass.__name__) or (klass.__doc__ or klass.__name__).strip().splitlines()[0]
        entry = out.setdefault(status, {"model": ErrorBody, "description": ""})
        entry["description"] = f"{entry['description']}; {text}" if entry["description"] else text
    return out
