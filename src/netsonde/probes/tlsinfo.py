"""TLS details the http and tcp probes report: protocol version as a number, and how many days
the peer's certificate has left (blackbox_exporter's probe_ssl_earliest_cert_expiry, for the
leaf: Python 3.11 does not expose the peer's chain).

The expiry is read from the DER certificate itself, so it is known even when verification is
off (``getpeercert()`` returns nothing then) and no X.509 library is needed.
"""

from __future__ import annotations

import os
import ssl
import time
from calendar import timegm

from pydantic import BaseModel, ConfigDict, Field, field_validator

from netsonde.probes.targets import check_host

_VERSIONS = {"TLSv1": 1.0, "TLSv1.1": 1.1, "TLSv1.2": 1.2, "TLSv1.3": 1.3}


class TlsParams(BaseModel):
    """Client-side TLS settings shared by the probes that speak TLS."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    verify: bool = Field(True, description="check the certificate chain and the name")
    ca_file: str | None = Field(None, description="PEM file of trusted CAs (absolute path)")
    server_name: str | None = Field(
        None, description="name sent as SNI and checked against the certificate"
    )

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        if v is not None and not (os.path.isabs(v) and os.path.isfile(v)):
            raise ValueError("ca_file must be the absolute path of an existing file")
        return v

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, v: str | None) -> str | None:
        return None if v is None else check_host(v)

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def version_number(name: str | None) -> float | None:
    """``"TLSv1.3"`` → 1.3 (a number, so it can be charted and alerted on)."""
    return _VERSIONS.get(name or "")


def expiry_days(der: bytes | None, now: float | None = None) -> float | None:
    """Days from ``now`` until the certificate's notAfter (negative once expired)."""
    if not der:
        return None
    not_after = der_not_after(der)
    return round((not_after - (time.time() if now is None else now)) / 86400, 6)


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``pos``."""
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    if pos + length > len(buf):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def der_not_after(der: bytes) -> float:
    """notAfter of an X.509 certificate (RFC 5280 §4.1), epoch seconds.

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }
    """
    _, cert, _ = _tlv(der, 0)
    _, pos, _ = _tlv(der, cert)  # into tbsCertificate
    if der[pos] == 0xA0:  # explicit version tag
        pos = _tlv(der, pos)[2]
    for _ in range(3):  # serialNumber, signature, issuer
        pos = _tlv(der, pos)[2]
    _, validity, _ = _tlv(der, pos)
    not_before_end = _tlv(der, validity)[2]
    tag, start, end = _tlv(der, not_before_end)
    return _asn1_time(tag, der[start:end].decode("ascii"))


def _asn1_time(tag: int, text: str) -> float:
    if not text.endswith("Z"):
        raise ValueError(f"certificate time {text!r} is not UTC")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ; RFC 5280: YY >= 50 means 19YY
        yy = int(text[:2])
        text = f"{1900 + yy if yy >= 50 else 2000 + yy}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"unexpected ASN.1 time tag {tag:#x}")
    fields = (text[0:4], text[4:6], text[6:8], text[8:10], text[10:12], text[12:14])
    return float(timegm(tuple(int(f) for f in fields)))
