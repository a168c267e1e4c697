"""TCP connect time to one port, optionally with TLS and a line-based dialogue
(blackbox_exporter's tcp prober with its query_response steps, simplified).

Failure is a measurement here, not a tool error: a refused, unreachable or silent port gives
``ok = 0`` with the reason in ``extra["error"]`` (blackbox's probe_success 0), so an
availability chart of ``ok`` counts it. ``Result.error`` is kept for when nothing could be
attempted (the run's deadline already passed).

Values: ``connectMs`` (SYN to established), ``durationMs`` (connect, TLS and dialogue),
``ok`` 0/1; with TLS also ``tlsMs``, ``tlsVersion`` (1.2, 1.3…) and ``certExpiryDays``.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from netsonde.model import Result
from netsonde.probes import deadline as deadlines
from netsonde.probes import tlsinfo
from netsonde.probes.base import Tool
from netsonde.probes.targets import check_ip

NAME = "tcp"

_MAX_READ = 1 << 20  # bytes read while waiting for an expected line


class Step(BaseModel):
    """One step of the dialogue: wait for a line matching ``expect``, then send ``send``
    followed by a newline (either may be left out)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    expect: str | None = Field(None, description="regex searched in each received line")
    send: str | None = Field(None, description="text sent, followed by a newline")

    @field_validator("expect")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regex: {e}") from None
        return v

    @model_validator(mode="after")
    def _something(self) -> Step:
        if self.expect is None and self.send is None:
            raise ValueError("a step needs 'expect', 'send' or both")
        return self


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    port: int = Field(ge=1, le=65_535)
    timeout: float = Field(5.0, gt=0, le=300, description="seconds for the whole probe")
    query_response: tuple[Step, ...] = ()
    tls: bool = False
    tls_config: tlsinfo.TlsParams = tlsinfo.TlsParams()


def check_target(target: str) -> str:
    return check_ip(target)


def default_timeout(params: Params) -> float:
    return params.timeout + 2.0


def run(target: str, params: Params, deadline: float) -> Result:
    budget = deadlines.budget(deadline, params.timeout)
    if budget <= 0:
        return Result(tool=NAME, target=target, error=deadlines.NO_TIME_LEFT)
    end = time.monotonic() + budget
    values: dict[str, float | int | None] = {"connectMs": None, "ok": 0}
    extra: dict[str, Any] = {"port": params.port}
    t0 = time.perf_counter()
    try:
        sock = socket.create_connection((target, params.port), timeout=budget)
    except OSError as e:
        extra["error"] = f"connect: {_reason(e)}"
        return Result(tool=NAME, target=target, values=values, extra=extra)
    values["connectMs"] = _ms(time.perf_counter() - t0)
    conn: socket.socket = sock
    try:
        if params.tls:
            conn = _start_tls(sock, target, params.tls_config, end, values)
        _dialogue(conn, params.query_response, end, extra)
        values["ok"] = 1
    except (OSError, _DialogueError) as e:
        extra["error"] = _reason(e)
    finally:
        conn.close()  # the TLS socket, once it took the plain one over
        sock.close()
    values["durationMs"] = _ms(time.perf_counter() - t0)
    return Result(tool=NAME, target=target, values=values, extra=extra)


class _DialogueError(Exception):
    pass


def _start_tls(
    sock: socket.socket,
    target: str,
    tls: tlsinfo.TlsParams,
    end: float,
    values: dict[str, float | int | None],
) -> ssl.SSLSocket:
    sock.settimeout(_left(end))
    t = time.perf_counter()
    try:
        conn = tls.context().wrap_socket(sock, server_hostname=tls.server_name or target)
    except ssl.SSLError as e:
        raise _DialogueError(f"tls: {e.reason or e}") from None
    except OSError as e:
        raise _DialogueError(f"tls: {_reason(e)}") from None
    values["tlsMs"] = _ms(time.perf_counter() - t)
    values["tlsVersion"] = tlsinfo.version_number(conn.version())
    values["certExpiryDays"] = tlsinfo.expiry_days(conn.getpeercert(binary_form=True))
    return conn


def _dialogue(
    conn: socket.socket, steps: tuple[Step, ...], end: float, extra: dict[str, Any]
) -> None:
    buf = b""
    received = 0
    for i, step in enumerate(steps):
        if step.expect is not None:
            pattern = re.compile(step.expect)
            while True:
                line, sep, rest = buf.partition(b"\n")
                if sep:
                    buf = rest
                    if pattern.search(line.decode("utf-8", "replace").rstrip("\r")):
                        break
                    continue
                if received > _MAX_READ:
                    raise _DialogueError(f"step {i}: no line matched {step.expect!r} in 1 MiB")
                conn.settimeout(_left(end))
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    raise _DialogueError(
                        f"step {i}: timed out waiting for {step.expect!r}"
                    ) from None
                if not chunk:
                    raise _DialogueError(f"step {i}: connection closed before {step.expect!r}")
                received += len(chunk)
                buf += chunk
            extra.setdefault("matched", []).append(line.decode("utf-8", "replace").rstrip("\r"))
        if step.send is not None:
            conn.settimeout(_left(end))
            conn.sendall(step.send.encode() + b"\n")


def _left(end: float) -> float:
    left = end - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower() if e.strerror[:1].isupper() else e.strerror
    return str(e) or type(e).__name__


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 6)


TOOL = Tool(NAME, Params, check_target, default_timeout, run)
