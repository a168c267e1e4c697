"""One DNS query to one server, timed (blackbox_exporter's dns prober).

The target is the server's IP address: the probe never resolves a name and never uses the
system's resolver. The response is checked like blackbox does: its rcode must be one of
``valid_rcodes`` and each section's records must pass that section's regex rules (searched in
each record's text, ``name<TAB>ttl<TAB>class<TAB>type<TAB>rdata`` as blackbox prints it).

A server that does not answer within the timeout is a run error (there is no response to
measure), with ``ok = 0`` in the values as well; an answer that fails validation is a
measurement with ``ok = 0``.

Values: ``lookupMs`` (query out to response in; over TCP it includes the connect), ``rcode``,
``answers``, ``authority``, ``additional`` (record counts), ``ok`` 0/1, and ``serial`` when
the answer holds an SOA. Extra: the records as text, the rcode's name, what failed.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
from pydantic import BaseModel, ConfigDict, Field, field_validator

from netsonde.model import Result
from netsonde.probes import deadline as deadlines
from netsonde.probes.base import Tool
from netsonde.probes.targets import check_ip

NAME = "dns"


def _regexes(v: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in v:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"invalid regex {pattern!r}: {e}") from None
    return v


class RRValidator(BaseModel):
    """blackbox_exporter's DNSRRValidator: each rule applies to one section's records."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fail_if_matches_regexp: tuple[str, ...] = ()  # any record matches any regex
    fail_if_all_match_regexp: tuple[str, ...] = ()  # every record matches every regex
    fail_if_not_matches_regexp: tuple[str, ...] = ()  # some record misses a regex (or none)
    fail_if_none_matches_regexp: tuple[str, ...] = ()  # no record matches a regex (or none)

    _check = field_validator("*")(_regexes)

    def failure(self, records: list[str]) -> str | None:
        """Why ``records`` fail these rules, or None when they pass."""
        if not records and (self.fail_if_not_matches_regexp or self.fail_if_none_matches_regexp):
            return "no records, but a match is required"
        for pattern in self.fail_if_matches_regexp:
            if hit := next((r for r in records if re.search(pattern, r)), None):
                return f"{hit!r} matches {pattern!r}"
        for pattern in self.fail_if_not_matches_regexp:
            if miss := next((r for r in records if not re.search(pattern, r)), None):
                return f"{miss!r} does not match {pattern!r}"
        if self.fail_if_all_match_regexp and all(
            re.search(p, r) for p in self.fail_if_all_match_regexp for r in records
        ):
            return f"every record matches {list(self.fail_if_all_match_regexp)}"
        for pattern in self.fail_if_none_matches_regexp:
            if not any(re.search(pattern, r) for r in records):
                return f"no record matches {pattern!r}"
        return None


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    query_name: str = Field(description="name to ask for (an IP address with PTR: its arpa name)")
    query_type: str = "A"
    query_class: str = "IN"
    transport: Literal["udp", "tcp"] = "udp"
    port: int = Field(53, ge=1, le=65_535)
    timeout: float = Field(5.0, gt=0, le=60, description="seconds to wait for the response")
    recursion_desired: bool = True
    valid_rcodes: tuple[str, ...] = ("NOERROR",)
    validate_answer_rrs: RRValidator = RRValidator()
    validate_authority_rrs: RRValidator = RRValidator()
    validate_additional_rrs: RRValidator = RRValidator()

    @field_validator("query_name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            dns.name.from_text(v)
        except dns.exception.DNSException as e:
            raise ValueError(f"not a valid DNS name: {e}") from None
        return v

    @field_validator("query_type")
    @classmethod
    def _type(cls, v: str) -> str:
        try:
            return dns.rdatatype.to_text(dns.rdatatype.from_text(v.upper()))
        except dns.exception.DNSException:
            raise ValueError(f"unknown record type {v!r}") from None

    @field_validator("query_class")
    @classmethod
    def _class(cls, v: str) -> str:
        try:
            return dns.rdataclass.to_text(dns.rdataclass.from_text(v.upper()))
        except dns.exception.DNSException:
            raise ValueError(f"unknown record class {v!r}") from None

    @field_validator("valid_rcodes")
    @classmethod
    def _rcodes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one rcode is needed")
        try:
            return tuple(dns.rcode.to_text(dns.rcode.from_text(r.upper())) for r in v)
        except dns.exception.DNSException as e:
            raise ValueError(f"unknown rcode: {e}") from None


def check_target(target: str) -> str:
    return check_ip(target)  # the server: never resolved


def default_timeout(params: Params) -> float:
    return params.timeout + 2.0


def query_for(params: Params) -> dns.message.Message:
    name = params.query_name
    if params.query_type == "PTR":
        with contextlib.suppress(ValueError, dns.exception.DNSException):  # else: a name
            name = dns.reversename.from_address(name).to_text()
    q = dns.message.make_query(name, params.query_type, params.query_class)
    if not params.recursion_desired:
        q.flags &= ~dns.flags.RD
    return q


def record_texts(section: list[dns.rrset.RRset]) -> list[str]:
    """One line per record, as blackbox (miekg/dns) prints them, so its regexes carry over."""
    out = []
    for rrset in section:
        head = "\t".join(
            (
                rrset.name.to_text(),
                str(rrset.ttl),
                dns.rdataclass.to_text(rrset.rdclass),
                dns.rdatatype.to_text(rrset.rdtype),
            )
        )
        out += [f"{head}\t{rdata.to_text()}" for rdata in rrset]
    return out


def run(target: str, params: Params, deadline: float) -> Result:
    timeout = deadlines.budget(deadline, params.timeout)
    if timeout <= 0:
        return Result(tool=NAME, target=target, error=deadlines.NO_TIME_LEFT)
    query = query_for(params)
    send = dns.query.udp if params.transport == "udp" else dns.query.tcp
    try:
        response = send(query, target, timeout=timeout, port=params.port)
    except dns.exception.Timeout:
        return _no_answer(target, f"no response within {timeout:g}s")
    except (OSError, dns.exception.DNSException) as e:
        return _no_answer(target, f"{params.transport}: {e}")
    return evaluate(target, params, response)


def _no_answer(target: str, error: str) -> Result:
    return Result(tool=NAME, target=target, values={"ok": 0}, error=error)


def evaluate(target: str, params: Params, response: dns.message.Message) -> Result:
    """The values of one response: counts, rcode, and the blackbox checks."""
    sections = {
        "answer": record_texts(response.answer),
        "authority": record_texts(response.authority),
        "additional": record_texts(response.additional),
    }
    rcode = response.rcode()
    failures: list[str] = []
    if dns.rcode.to_text(rcode) not in params.valid_rcodes:
        failures.append(f"rcode {dns.rcode.to_text(rcode)} not in {list(params.valid_rcodes)}")
    rules = (
        params.validate_answer_rrs,
        params.validate_authority_rrs,
        params.validate_additional_rrs,
    )
    for (section, records), rule in zip(sections.items(), rules, strict=True):
        if why := rule.failure(records):
            failures.append(f"{section}: {why}")
    values: dict[str, float | int | None] = {
        "lookupMs": round(response.time * 1000, 6),
        "rcode": rcode,
        "answers": len(sections["answer"]),
        "authority": len(sections["authority"]),
        "additional": len(sections["additional"]),
        "ok": 0 if failures else 1,
    }
    soa = [rr for rrset in response.answer if rrset.rdtype == dns.rdatatype.SOA for rr in rrset]
    if soa:
        values["serial"] = soa[0].serial
    extra: dict[str, Any] = {
        "rcode": dns.rcode.to_text(rcode),
        "flags": dns.flags.to_text(response.flags),
        **sections,
    }
    if failures:
        extra["failed"] = failures
    return Result(tool=NAME, target=target, values=values, extra=extra)


TOOL = Tool(NAME, Params, check_target, default_timeout, run)
