"""The REST kit every service's routes use: one error shape (``{"error": …}``, each invalid field
named), the store route (token and body size checked before the body is read), time and window
parameters."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException  # FastAPI raises this base class too
from starlette.types import Message

from netsonde.archive import ArchiveError
from netsonde.auth import Refusal, bearer, refusal
from netsonde.model import US_PER_S, to_us
from netsonde.units import EPOCH, ONE_US, check_epoch, parse_duration

MIN_WINDOW_S, MAX_WINDOW_S = 1.0, 366 * 86400.0
TIME_FORMS = (
    "ISO 8601 with an offset or Z (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00)"
    " or epoch seconds (1714564800, 1714564800.25)"
)
_EPOCH_SECONDS = re.compile(r"-?\d{1,12}(?:\.\d{1,9})?")


class FieldError(BaseModel):
    field: str = Field(description="where, e.g. runs[0].state or limit")
    message: str


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in one line")
    errors: list[FieldError] | None = Field(None, description="every invalid field, when known")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad parameter (time, cursor, window…)"},
    422: {"model": ErrorBody, "description": "invalid parameter or body; each field is named"},
    503: {"model": ErrorBody, "description": "the store is busy or unavailable"},
}


def error_response(
    status: int,
    message: str,
    *,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=message, errors=errors).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def _field_name(loc: Sequence[str | int]) -> str:
    """``("body", "runs", 0, "state")`` → ``runs[0].state``; ``("query", "limit")`` → ``limit``."""
    parts = list(loc[1:]) if len(loc) > 1 else list(loc)
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if errors and errors[0]["type"] == "json_invalid":  # not JSON at all: a plain bad request
        detail = errors[0].get("ctx", {}).get("error")
        return error_response(400, "body is not valid JSON" + (f": {detail}" if detail else ""))
    fields = [
        FieldError(field=_field_name(e["loc"]), message=str(e["msg"]).removeprefix("Value error, "))
        for e in errors
    ]
    first = fields[0] if fields else FieldError(field="request", message="invalid")
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    return error_response(422, f"{first.field}: {first.message}{more}", errors=fields)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class ApiRoute(APIRoute):
    """Answers every error as ``ErrorBody``. A router cannot install the app's exception
    handlers, and FastAPI's own error bodies (``{"detail": ...}``) differ by kind, so the
    route converts them itself."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await self.answer(request, handler)

        return handle

    async def answer(self, request: Request, handler: Handler) -> Response:
        """``handler``'s response to the admitted request, or its error as ``ErrorBody``."""
        try:
            return await handler(await self.admit(request))
        except RequestValidationError as e:
            return _validation_response(e)
        except HTTPException as e:
            return error_response(e.status_code, str(e.detail), headers=e.headers)
        except ArchiveError as e:
            return error_response(503, str(e), headers={"Retry-After": "5"})

    async def admit(self, request: Request) -> Request:
        """Checks made before FastAPI reads the body; returns the request to go on with."""
        return request


def store_route(token: str | None, max_body_bytes: int) -> type[APIRoute]:
    """A route class for requests that store: token and size are checked before the body is
    read, so a client without the token gets 401 whatever it sent, and an oversized body is
    refused without being buffered."""

    class StoreRoute(ApiRoute):
        async def admit(self, request: Request) -> Request:
            require_token(token, request.headers.get("authorization"))
            return limit_body(request, max_body_bytes)

    return StoreRoute


def require_token(expected: str | None, authorization: str | None) -> None:
    why = refusal(expected, bearer(authorization))
    if why is Refusal.DISABLED:
        raise HTTPException(403, why.value)
    if why is Refusal.DENIED:
        raise HTTPException(
            401,
            f"{why.value}: send the header Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def limit_body(request: Request, limit: int) -> Request:
    """The request with its body capped at ``limit`` bytes (413 beyond), declared or not."""
    too_large = HTTPException(413, f"request body larger than {limit} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise too_large
        return message

    return Request(request.scope, receive)


def parse_time(name: str, text: str) -> int:
    """A time parameter → epoch µs: ISO 8601 with an offset, or epoch seconds, in the range
    ISO 8601 can say (an answer prints it back).

    Not config.parse_time: a query parameter is always text, and a time without an offset
    (local time there) would depend on the server's time zone here.
    """
    text = text.strip()
    if _EPOCH_SECONDS.fullmatch(text):
        # Exact: a float is 32 µs coarse near 9999, enough to step past the last second.
        us = int((Decimal(text) * US_PER_S).to_integral_value(ROUND_HALF_EVEN))
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:  # a time without offset means nothing here
            raise HTTPException(400, f"{name}: invalid time {text!r}; use {TIME_FORMS}")
        us = (moment - EPOCH) // ONE_US
    try:
        check_epoch(us // US_PER_S)  # its whole second: 9999-12-31T23:59:59.5Z is a time
    except ValueError as e:
        raise HTTPException(400, f"{name}: {e}") from None
    return us


def parse_window(text: str) -> int:
    """``60``, ``"60s"``, ``"1h"`` → µs (config.parse_duration, plus bare numbers as seconds)."""
    try:
        seconds = parse_duration(float(text) if _EPOCH_SECONDS.fullmatch(text) else text)
    except ValueError as e:
        raise HTTPException(400, f"window: {e} (seconds, or e.g. 60s, 15m, 1h, 1d)") from None
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise HTTPException(400, f"window: must be between 1s and 366d, got {text!r}")
    return to_us(seconds)
