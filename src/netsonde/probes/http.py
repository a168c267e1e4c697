"""One HTTP(S) request, timed by phase (blackbox_exporter's http prober).

The target is a URL whose host is an IP literal (``http://192.0.2.1:8080/health``,
``https://[2001:db8::1]/``): the probe never resolves a name, and a redirect to a named host
is refused rather than followed. Proxies and certificates from the environment are ignored.

Phases follow blackbox's probe_http_duration_seconds{phase}, summed over redirects, from
httpcore's trace events: ``resolveMs`` (always 0: nothing is resolved), ``connectMs`` (TCP
connect), ``tlsMs`` (handshake), ``processingMs`` (request sent on the connection until the
response headers are in) and ``transferMs`` (the body). ``durationMs`` is the whole probe.

No HTTP response at all (refused, timed out, TLS failure) is a run error, with ``ok = 0`` in
the values too; a response that fails a check (status, body regex, size) is a measurement with
``ok = 0`` and the reason in ``extra["failed"]``.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import defaultdict
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from netsonde.model import Result
from netsonde.probes import deadline as deadlines
from netsonde.probes import tlsinfo
from netsonde.probes.base import Tool

NAME = "http"

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
_PHASES = ("resolve", "connect", "tls", "processing", "transfer")


def _regexes(v: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in v:
        try:
            re.compile(pattern.encode())
        except re.error as e:
            raise ValueError(f"invalid regex {pattern!r}: {e}") from None
    return v


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Literal["GET", "HEAD"] = "GET"
    valid_status_codes: tuple[int, ...] = Field((), description="empty: any 2xx")
    timeout: float = Field(10.0, gt=0, le=300, description="seconds for the whole probe")
    follow_redirects: bool = False
    max_redirects: int = Field(10, ge=0, le=50)
    headers: dict[str, str] = {}
    fail_if_body_matches_regexp: tuple[str, ...] = ()
    fail_if_body_not_matches_regexp: tuple[str, ...] = ()
    body_size_limit: int = Field(10 << 20, ge=0, description="bytes; a larger body fails")
    tls_config: tlsinfo.TlsParams = tlsinfo.TlsParams()

    _check_regexes = field_validator(
        "fail_if_body_matches_regexp", "fail_if_body_not_matches_regexp"
    )(_regexes)

    @field_validator("valid_status_codes")
    @classmethod
    def _codes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if bad := [c for c in v if not 100 <= c <= 599]:
            raise ValueError(f"status codes are 100-599 (got {bad})")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: value contains a line break or NUL")
        return v


def check_url(url: str) -> httpx.URL:
    """The parsed URL if it is http(s), without userinfo, with an IP-literal host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise ValueError(f"target {url!r} is not a valid URL: {e}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"target {url!r}: the scheme must be http or https")
    if parsed.userinfo:
        raise ValueError(f"target {url!r}: credentials in the URL are not allowed")
    try:
        if "%" in parsed.host:  # a zone id arrives percent-encoded; not worth supporting
            raise ValueError
        ipaddress.ip_address(parsed.host)
    except ValueError:
        raise ValueError(
            f"target {url!r}: the host must be an IP address (names are not resolved)"
        ) from None
    if parsed.port is not None and not 1 <= parsed.port <= 65_535:
        raise ValueError(f"target {url!r}: port {parsed.port} is out of range")
    return parsed


def check_target(target: str) -> str:
    check_url(target)
    return target


def default_timeout(params: Params) -> float:
    return params.timeout + 2.0


class _Phases:
    """Phase durations from httpcore's trace events, summed over a redirect chain."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        self.on_connection = 0.0  # when the current request started on its connection
        self.headers_in = 0.0

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        _, _, name = event.partition(".")  # "connection.connect_tcp.started" → step.state
        step, _, state = name.rpartition(".")
        if state == "started":
            self._start[step] = now
            if step == "send_request_headers":
                self.on_connection = now
            elif step == "response_closed":  # body left unread (too large, or an error)
                self._transfer_done(now)
            return
        if state != "complete" or step not in self._start:
            return
        took = (now - self._start.pop(step)) * 1000
        if step == "connect_tcp":
            self.ms["connect"] += took
        elif step == "start_tls":
            self.ms["tls"] += took
        elif step == "receive_response_headers":
            self.headers_in = now
            self.ms["processing"] += (now - self.on_connection) * 1000
        elif step == "receive_response_body":
            self._transfer_done(now)

    def _transfer_done(self, now: float) -> None:
        if self.headers_in:
            self.ms["transfer"] += (now - self.headers_in) * 1000
            self.headers_in = 0.0


def _only_ip_hosts(request: httpx.Request) -> None:
    # Redirects pass through here too: following one to a name would resolve it.
    try:
        check_url(str(request.url))
    except ValueError:
        raise ValueError(
            f"refused to request {request.url}: not an IP-literal http(s) URL"
        ) from None


def run(target: str, params: Params, deadline: float) -> Result:
    budget = deadlines.budget(deadline, params.timeout)
    if budget <= 0:
        return Result(tool=NAME, target=target, error=deadlines.NO_TIME_LEFT)
    end = time.monotonic() + budget
    phases = _Phases()
    extra: dict[str, Any] = {}
    client = httpx.Client(
        trust_env=False,
        verify=params.tls_config.context(),
        timeout=httpx.Timeout(budget),
        follow_redirects=params.follow_redirects,
        max_redirects=params.max_redirects,
        event_hooks={"request": [_only_ip_hosts]},
    )
    ext: dict[str, Any] = {"trace": phases}
    if params.tls_config.server_name:
        ext["sni_hostname"] = params.tls_config.server_name
    t0 = time.perf_counter()
    try:
        with (
            client,
            client.stream(
                params.method, target, headers=params.headers, extensions=ext
            ) as response,
        ):
            body, too_big = _read_body(response, params.body_size_limit, end)
            tls = _tls_values(response)
    except (httpx.HTTPError, ValueError, OSError) as e:
        return Result(tool=NAME, target=target, values={"ok": 0}, error=_describe(e))
    duration = (time.perf_counter() - t0) * 1000
    failures = _failures(params, response.status_code, body, too_big)
    values: dict[str, float | int | None] = {
        "statusCode": response.status_code,
        "contentLength": _content_length(response),
        "bodyBytes": len(body),
        "durationMs": round(duration, 6),
        **{f"{p}Ms": round(phases.ms[p], 6) for p in _PHASES},
        "redirects": len(response.history),
        "httpVersion": {"HTTP/1.0": 1.0, "HTTP/1.1": 1.1, "HTTP/2": 2.0}.get(response.http_version),
        **tls,
        "ok": 0 if failures else 1,
    }
    if response.history:
        extra["final_url"] = str(response.url)
    if failures:
        extra["failed"] = failures
    return Result(tool=NAME, target=target, values=values, extra=extra)


def _read_body(response: httpx.Response, limit: int, end: float) -> tuple[bytes, bool]:
    """The (decoded) body up to ``limit`` bytes, and whether it was longer. The probe's
    total timeout applies here too (httpx's timeouts are per read, not per response)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), True
        chunks.append(chunk)
        if time.monotonic() > end:
            raise httpx.ReadTimeout("the body did not arrive within the timeout")
    return b"".join(chunks), False


def _tls_values(response: httpx.Response) -> dict[str, float | None]:
    stream = response.extensions.get("network_stream")
    # httpcore hands out the low-level _ssl._SSLSocket: positional arguments only.
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is None:
        return {}
    return {
        "tlsVersion": tlsinfo.version_number(ssl_object.version()),
        "certExpiryDays": tlsinfo.expiry_days(ssl_object.getpeercert(True)),
    }


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _failures(params: Params, status: int, body: bytes, too_big: bool) -> list[str]:
    failures = []
    valid = (
        status in params.valid_status_codes if params.valid_status_codes else 200 <= status < 300
    )
    if not valid:
        failures.append(f"status {status} not valid")
    if too_big:
        failures.append(f"body larger than {params.body_size_limit} bytes")
    for pattern in params.fail_if_body_matches_regexp:
        if re.search(pattern.encode(), body):
            failures.append(f"body matches {pattern!r}")
    for pattern in params.fail_if_body_not_matches_regexp:
        if not re.search(pattern.encode(), body):
            failures.append(f"body does not match {pattern!r}")
    return failures


def _describe(e: BaseException) -> str:
    """One line a network engineer can act on."""
    if isinstance(e, httpx.TooManyRedirects):
        return str(e)
    if isinstance(e, httpx.TimeoutException):
        return f"timed out ({type(e).__name__})"
    if isinstance(e, httpx.HTTPError | OSError):
        cause: BaseException = e
        while cause.__context__ is not None and not str(cause):
            cause = cause.__context__
        text = str(cause) or type(cause).__name__
        return f"{type(e).__name__}: {text}"
    return str(e)


TOOL = Tool(NAME, Params, check_target, default_timeout, run)
