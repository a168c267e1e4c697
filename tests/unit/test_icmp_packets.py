"""ICMP echo packets and reply matching, against hand-computed vectors (no sockets)."""

from __future__ import annotations

import struct

import pytest

from netsonde.engines.icmp.packet import (
    checksum,
    echo_request,
    matches,
    parse_reply,
    payload,
)
from netsonde.engines.icmp.table import ProbeTable
from netsonde.metrics import pinger_summary

COOKIE = bytes.fromhex("0102030405060708")


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 §3: 0001 + f203 + f4f5 + f6f7 = 2ddf0 → ddf0 + 2 = ddf2 → ~ = 220d
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_checksum_pads_an_odd_byte() -> None:
    # 0001 + f200 = f201 → ~ = 0dfe
    assert checksum(bytes.fromhex("0001f2")) == 0x0DFE


def test_echo_request_by_hand() -> None:
    # 0800 + 0000 + 1234 + 0001 + 6162 + 6364 = defb → ~ = 2104
    packet = echo_request(False, 0x1234, 1, b"abcd")
    assert packet == bytes.fromhex("080021041234000161626364")
    assert checksum(packet) == 0  # a packet with its checksum in sums to 0


def test_icmpv6_request_leaves_the_checksum_to_the_kernel() -> None:
    packet = echo_request(True, 0xBEEF, 0x10002, b"")
    assert packet == bytes.fromhex("80000000beef0002")  # type 128, seq wraps to 16 bits


def test_payload_layout_and_sizes() -> None:
    assert payload(COOKIE, 0x01020304, 16) == COOKIE + bytes([1, 2, 3, 4]) + b"\0" * 4
    assert payload(COOKIE, 7, 5) == COOKIE[:5]
    assert payload(COOKIE, 7, 0) == b""


def reply_of(request: bytes) -> bytes:
    """What the peer sends back: type 0 instead of 8, checksum adjusted (not checked here)."""
    return b"\x00" + request[1:]


def ipv4(icmp: bytes, ttl: int, options: bytes = b"") -> bytes:
    ihl = (20 + len(options)) // 4
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(options) + len(icmp), 0, 0, ttl, 1, 0,
        bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
    )  # fmt: skip
    return head + options + icmp


@pytest.mark.parametrize("options", [b"", b"\x01\x01\x01\x00"])  # IHL 5 and 6
def test_raw_ipv4_header_is_stripped_and_ttl_kept(options: bytes) -> None:
    data = payload(COOKIE, 9, 56)
    reply = parse_reply(ipv4(reply_of(echo_request(False, 77, 9, data)), 57, options),
                        ipv6=False, has_ip_header=True)  # fmt: skip
    assert reply is not None
    assert (reply.ident, reply.seq, reply.ttl, reply.size) == (77, 9, 57, 64)
    assert reply.data == data


def test_requests_errors_and_junk_are_not_replies() -> None:
    request = echo_request(False, 1, 1, b"xy")
    assert parse_reply(ipv4(request, 64), ipv6=False, has_ip_header=True) is None
    assert parse_reply(b"\x03\x01" + request[2:], ipv6=False, has_ip_header=False) is None
    assert parse_reply(b"\x00\x00\x00", ipv6=False, has_ip_header=False) is None
    assert parse_reply(b"\x45" + b"\0" * 10, ipv6=False, has_ip_header=True) is None
    v6 = parse_reply(b"\x81" + echo_request(True, 5, 6, b"")[1:], ipv6=True, has_ip_header=False)
    assert v6 is not None and (v6.ident, v6.seq, v6.ttl) == (5, 6, None)
    assert parse_reply(reply_of(request), ipv6=True, has_ip_header=False) is None


def test_cookie_and_probe_number_matching() -> None:
    assert matches(payload(COOKIE, 42, 56), COOKIE, 42, 56)
    assert not matches(payload(COOKIE, 43, 56), COOKIE, 42, 56)  # another probe
    assert not matches(payload(b"X" * 8, 42, 56), COOKIE, 42, 56)  # another run
    assert not matches(payload(COOKIE, 42, 56)[:40], COOKIE, 42, 56)  # truncated
    assert matches(COOKIE[:3], COOKIE, 42, 3)  # tiny packets carry what fits
    assert matches(b"", COOKIE, 42, 0)


def parsed(ident: int, seq: int, number: int, cookie: bytes = COOKIE, size: int = 56):
    raw = reply_of(echo_request(False, ident, seq, payload(cookie, number, size)))
    reply = parse_reply(raw, ipv6=False, has_ip_header=False)
    assert reply is not None
    return reply


def sent_table(n: int, ident: int | None = 7) -> ProbeTable:
    """n probes to target 0 (127.0.0.1), probe k sent at k ms."""
    table = ProbeTable(COOKIE, ident, 56)
    for k in range(1, n + 1):
        table.add(0, k, "127.0.0.1", k * 1_000_000)
    return table


def test_duplicates_and_reordering_are_kept_in_arrival_order() -> None:
    table = sent_table(4)
    arrivals = [(0, 1_500_000), (2, 3_250_000), (2, 3_900_000), (1, 4_000_000)]  # seq 0 = k 1
    got = [table.match(parsed(7, seq, seq), "127.0.0.1", t) for seq, t in arrivals]
    samples = [hit[1] for hit in got if hit is not None]
    assert [(s.seq, s.rtt_ms) for s in samples] == [(1, 0.5), (3, 0.25), (3, 0.9), (2, 2.0)]
    assert samples[0].recv_us == 1500 and samples[0].size == 64
    assert table.unanswered == 1 and table.foreign == 0  # k 4 never answered
    values = pinger_summary(4, samples)
    assert values["duplicates"] == 1 and values["outOfOrder"] == 1
    assert values["lossPercent"] == 25.0


def test_foreign_replies_are_counted_not_kept() -> None:
    table = sent_table(2)
    assert table.match(parsed(7, 0, 0, cookie=b"otherrun"), "127.0.0.1", 2) is None
    assert table.match(parsed(8, 0, 0), "127.0.0.1", 2) is None  # another pinger's id
    assert table.match(parsed(7, 0, 1), "127.0.0.1", 2) is None  # seq of probe 0, number 1
    assert table.match(parsed(7, 0, 0), "127.0.0.2", 2) is None  # wrong source
    assert table.match(parsed(7, 5, 5), "127.0.0.1", 2) is None  # never sent
    assert table.foreign == 5 and table.unanswered == 2


def test_datagram_mode_ignores_the_rewritten_id() -> None:
    table = sent_table(1, ident=None)
    hit = table.match(parsed(31337, 0, 0), "127.0.0.1", 1_250_000)
    assert hit is not None and hit[1].rtt_ms == 0.25


def test_a_wrapped_seq_is_told_apart_by_the_probe_number() -> None:
    table = ProbeTable(COOKIE, 7, 56)
    for k in range(65_537):  # probe 65536 reuses seq 0
        table.add(0, k, "127.0.0.1", 0)
    assert table.unanswered == 65_536  # probe 0 can no longer be matched
    assert table.match(parsed(7, 0, 0), "127.0.0.1", 1) is None
    hit = table.match(parsed(7, 0, 65_536), "127.0.0.1", 1)
    assert hit is not None and hit[0].k == 65_536
