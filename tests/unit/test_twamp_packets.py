"""TWAMP-Test packets (RFC 5357 §4.1.2, §4.2.1), NTP timestamps and error estimates (RFC 4656
§4.1.2) against hand-assembled octets; the probe's per-packet arithmetic on a hand vector."""

from __future__ import annotations

import ctypes
import ipaddress
import random
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from netsonde import config
from netsonde import probes as tools
from netsonde.engines.twamp.clock import (
    STA_UNSYNC,
    TIME_ERROR,
    _Timex,
    estimate_from,
    read_estimate,
)
from netsonde.engines.twamp.packets import (
    NTP_UNIX_OFFSET,
    REFLECTOR_SIZE,
    SENDER_SIZE,
    ErrorEstimate,
    ReflectorPacket,
    SenderPacket,
    ns_from_ntp,
    ntp_from_ns,
    reflect,
)
from netsonde.engines.twamp.udp import Datagram, parse_hostport
from netsonde.probes import twamp as tool

S = 1_000_000_000  # ns per second

# 2023-11-14T22:13:20.5Z: Unix 1_700_000_000.5 s; NTP seconds 1_700_000_000 + 2_208_988_800
# = 3_908_988_800 = 0xE8FE6F80, fraction 0.5 = 0x80000000.
T_HALF = 1_700_000_000 * S + S // 2
T_HALF_NTP = bytes.fromhex("E8FE6F80 80000000")
# S=1, Z=0, Scale=3 (000011), Multiplier=42 (0x2A): 1 0 000011 00101010 = 0x832A.
ERR = ErrorEstimate(synchronized=True, z=0, scale=3, multiplier=42)
ERR_BYTES = bytes.fromhex("832A")


# ---- timestamps ------------------------------------------------------------------------------


def test_unix_epoch_is_ntp_2208988800() -> None:
    assert NTP_UNIX_OFFSET == 2_208_988_800
    assert ntp_from_ns(0) == 0x83AA7E80 << 32  # 2_208_988_800 = 0x83AA7E80
    assert ns_from_ntp(0x83AA7E80 << 32) == 0


def test_fraction_is_binary_fraction_of_a_second() -> None:
    assert ntp_from_ns(T_HALF).to_bytes(8, "big") == T_HALF_NTP
    assert ntp_from_ns(S // 4) & 0xFFFF_FFFF == 0x4000_0000
    assert ntp_from_ns(1) & 0xFFFF_FFFF == 4  # 1 ns = 4.29 units of 2^-32 s, truncated
    assert ns_from_ntp((0x83AA7E80 << 32) | 0xC000_0000) == 750_000_000


def test_nanoseconds_round_trip_exactly() -> None:
    rng = random.Random(5357)
    for _ in range(10_000):
        ns = rng.randrange(0, 4_000_000_000 * S)  # up to 2096: both NTP eras
        assert ns_from_ntp(ntp_from_ns(ns)) == ns


def test_era_1_after_2036() -> None:
    # 2040-01-01T00:00:00Z = Unix 2_208_988_800; NTP 4_417_977_600 wraps to 0x0754FD00.
    ntp = ntp_from_ns(2_208_988_800 * S)
    assert ntp == 0x0754FD00 << 32
    assert ns_from_ntp(ntp) == 2_208_988_800 * S


# ---- error estimate --------------------------------------------------------------------------


def test_error_estimate_bits() -> None:
    assert ERR.pack().to_bytes(2, "big") == ERR_BYTES
    assert ErrorEstimate.unpack(0x832A) == ERR
    assert ERR.seconds == 42 * 2.0 ** (3 - 32)
    z = ErrorEstimate.unpack(0b0100_0000_0000_0001)  # Z set (RFC 5357: PTP format), mult 1
    assert (z.synchronized, z.z, z.scale, z.multiplier) == (False, 1, 0, 1)
    top = ErrorEstimate.unpack(0xBFFF)  # S=1 Z=0 scale 63 multiplier 255
    assert (top.synchronized, top.z, top.scale, top.multiplier) == (True, 0, 63, 255)


@pytest.mark.parametrize("seconds", [0.0, 1e-9, 1e-6, 0.001, 0.25, 1.0, 3600.0])
def test_error_estimate_for_seconds_never_understates(seconds: float) -> None:
    est = ErrorEstimate.for_seconds(seconds)
    assert est.seconds >= seconds
    # Smallest scale that fits: one scale lower would need a multiplier above 255.
    if est.scale > 0:
        assert seconds / 2.0 ** (est.scale - 1 - 32) > 255


def test_error_estimate_one_ms() -> None:
    # 1 ms = 2^32 × 1e-3 ≈ 4_294_967 units of 2^-32 s; /2^15 = 131.07 → scale 15, mult 132.
    est = ErrorEstimate.for_seconds(0.001)
    assert (est.scale, est.multiplier) == (15, 132)


@pytest.mark.parametrize(
    "bad", [{"multiplier": 0}, {"multiplier": 256}, {"scale": 64}, {"scale": -1}, {"z": 2}]
)
def test_error_estimate_rejects_out_of_range_fields(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ErrorEstimate(**bad)


# ---- packets ---------------------------------------------------------------------------------


def test_sender_packet_octets() -> None:
    # 0-3 seq | 4-11 timestamp | 12-13 error estimate | 14- padding
    expected = (
        bytes.fromhex("01020304")  # 0-3   Sequence Number
        + T_HALF_NTP  # 4-11  Timestamp
        + ERR_BYTES  # 12-13 Error Estimate
        + b"pad"  # 14-   Packet Padding
    )
    pkt = SenderPacket(seq=0x01020304, timestamp_ns=T_HALF, error=ERR.pack(), padding=b"pad")
    assert pkt.pack() == expected
    assert SenderPacket.unpack(expected) == pkt
    assert len(SenderPacket(0, 0).pack()) == SENDER_SIZE == 14


def test_reflector_packet_octets() -> None:
    t2 = T_HALF + S  # 3_908_988_801.5 → E8FE6F81 80000000
    t3 = T_HALF + S + S // 4  # .75 → E8FE6F81 C0000000
    expected = (
        bytes.fromhex("00000007")  # 0-3   Sequence Number (the reflector's)
        + bytes.fromhex("E8FE6F81 C0000000")  # 4-11  Timestamp (T3)
        + bytes.fromhex("0001")  # 12-13 Error Estimate (S=0, scale 0, mult 1)
        + b"\0\0"  # 14-15 MBZ
        + bytes.fromhex("E8FE6F81 80000000")  # 16-23 Receive Timestamp (T2)
        + bytes.fromhex("01020304")  # 24-27 Sender Sequence Number
        + T_HALF_NTP  # 28-35 Sender Timestamp (T1)
        + ERR_BYTES  # 36-37 Sender Error Estimate
        + b"\0\0"  # 38-39 MBZ
        + bytes([64])  # 40    Sender TTL
        + b"xy"  # 41-   Packet Padding
    )
    pkt = ReflectorPacket(
        seq=7,
        timestamp_ns=t3,
        error=1,
        receive_ns=t2,
        sender_seq=0x01020304,
        sender_timestamp_ns=T_HALF,
        sender_error=ERR.pack(),
        sender_ttl=64,
        padding=b"xy",
    )
    assert pkt.pack() == expected
    assert ReflectorPacket.unpack(expected) == pkt
    assert len(ReflectorPacket(0, 0, 1, 0, 0, 0, 1, 255).pack()) == REFLECTOR_SIZE == 41


def test_minimum_sizes_are_enforced() -> None:
    with pytest.raises(ValueError, match="14 octets"):
        SenderPacket.unpack(bytes(13))
    with pytest.raises(ValueError, match="41 octets"):
        ReflectorPacket.unpack(bytes(40))
    with pytest.raises(ValueError):
        reflect(bytes(13), seq=0, receive_ns=0, send_ns=0, ttl=1)
    assert SenderPacket.unpack(bytes(14)).padding == b""
    assert ReflectorPacket.unpack(bytes(41)).padding == b""


def test_reflect_copies_the_sender_fields_bit_for_bit() -> None:
    # A zero multiplier is invalid but must come back unchanged: copied, never re-encoded.
    question = bytes.fromhex("DEADBEEF") + T_HALF_NTP + bytes.fromhex("C000") + bytes(range(40))
    answer = reflect(question, seq=9, receive_ns=T_HALF + 10, send_ns=T_HALF + 20, ttl=61)
    assert answer[24:38] == question[:14]
    assert answer[14:16] == answer[38:40] == b"\0\0"
    assert answer[40] == 61
    parsed = ReflectorPacket.unpack(answer)
    assert (parsed.seq, parsed.receive_ns, parsed.timestamp_ns) == (9, T_HALF + 10, T_HALF + 20)
    assert parsed.sender_error == 0xC000


@pytest.mark.parametrize("padding", [0, 1, 26, 27, 28, 100, 1400])
def test_reflected_size_is_the_senders_once_padded_by_27(padding: int) -> None:
    question = SenderPacket(1, T_HALF, padding=bytes(range(256)) * 6).pack()[: 14 + padding]
    answer = reflect(question, seq=0, receive_ns=0, send_ns=0, ttl=255)
    assert len(answer) == max(REFLECTOR_SIZE, len(question))
    assert answer[41:] == question[41:]  # the sender's padding without its first 27 octets


# ---- addresses and the probe -----------------------------------------------------------------


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:8620") == ("127.0.0.1", 8620)
    assert parse_hostport("[::1]:862") == ("::1", 862)
    assert parse_hostport("[fd00:99::2]", 862) == ("fd00:99::2", 862)
    assert parse_hostport("10.99.1.2", 862) == ("10.99.1.2", 862)
    for bad in ("localhost:862", "127.0.0.1", "::1:862x", "[::1]x", "1.2.3.4:70000", ""):
        with pytest.raises(ValueError):
            parse_hostport(bad)


def test_params_and_target() -> None:
    assert tool.Params().padding == 27 and tool.Params().port == 862
    with pytest.raises(ValidationError, match="bogus"):
        tool.Params.model_validate({"bogus": 1})
    with pytest.raises(ValidationError, match="dscp"):
        tool.Params.model_validate({"dscp": 64})
    assert tool.check_target("::1") == "::1"
    with pytest.raises(ValueError, match="IP address"):
        tool.check_target("reflector.example.org")


def _answer(seq: int, t1: int, t2: int, t3: int, t4: int, *, ttl: int = 60) -> Datagram:
    data = ReflectorPacket(100 + seq, t3, 1, t2, seq, t1, 1, ttl, b"p" * 5).pack()
    return Datagram(data=data, peer=("127.0.0.1", 862), received_ns=t4, ttl=57, kernel_stamp=True)


def test_rtt_excludes_the_reflectors_time() -> None:
    t1 = T_HALF
    session = tool._Session(sent_ns={0: t1})
    # forward 500 ns, 200 ns in the reflector, backward 700 ns: RTT 1_400 − 200 = 1_200 ns.
    session.take(_answer(0, t1, t1 + 500, t1 + 700, t1 + 1_400))
    session.collate()
    [sample] = session.replies
    assert sample.seq == 0 and sample.rtt_ms == pytest.approx(0.0012, abs=1e-12)
    assert (sample.ttl, sample.size, sample.recv_us) == (57, 46, (t1 + 1_400) // 1000)
    [pkt] = session.packets
    assert pkt["forward_ms"] == pytest.approx(0.0005)
    assert pkt["backward_ms"] == pytest.approx(0.0007)
    assert pkt["reflector_ms"] == pytest.approx(0.0002)
    assert (pkt["reflector_seq"], pkt["sender_ttl"], pkt["reply_ttl"]) == (100, 60, 57)


def test_answers_to_nothing_we_sent_are_ignored() -> None:
    session = tool._Session(sent_ns={0: T_HALF})
    session.take(_answer(0, T_HALF + 1, 0, 0, 0))  # our seq, another T1: an earlier run's
    session.take(_answer(5, T_HALF, 0, 0, 0))  # a seq we never sent
    session.take(Datagram(b"short", ("127.0.0.1", 862), 0, None, True))
    session.collate()
    assert session.replies == [] and session.ignored == 3
    ours = tool._Session(sent_ns={0: T_HALF}, peer=(ipaddress.ip_address("::1"), 862))
    ours.take(_answer(0, T_HALF, T_HALF, T_HALF, T_HALF))  # right packet, from 127.0.0.1
    assert ours.answers == [] and ours.ignored == 1
    session.take(_answer(0, T_HALF, T_HALF, T_HALF, T_HALF))
    session.take(_answer(0, T_HALF, T_HALF, T_HALF, T_HALF))  # a duplicate is kept
    session.collate()
    assert [r.seq for r in session.replies] == [0, 0]


def test_kernel_send_time_replaces_t1_when_it_is_known() -> None:
    t1 = T_HALF
    session = tool._Session(tx_order=[])
    session.sent(0, t1, None)
    session.sent(1, t1 + 10_000, None)
    session.take_tx(0, t1 + 300)  # packet 0 left 300 ns after we wrote T1 into it
    session.take_tx(1, t1 + 9_000)  # before its T1: impossible, so not believed
    session.take_tx(7, t1)  # a stamp number we never sent
    assert session.tx_ns == {0: t1 + 300}
    session.take(_answer(0, t1, t1 + 500, t1 + 700, t1 + 1_400))
    session.take(_answer(1, t1 + 10_000, t1 + 10_500, t1 + 10_700, t1 + 11_400))
    session.collate()
    first, second = session.packets
    # 0: RTT (1_400 − 300) − 200 = 900 ns, forward 200 ns; 1: user-space T1, 1_200 ns as before.
    assert first["t1_kernel"] and first["rtt_ms"] == pytest.approx(0.0009, abs=1e-12)
    assert first["forward_ms"] == pytest.approx(0.0002, abs=1e-12)
    assert not second["t1_kernel"] and second["rtt_ms"] == pytest.approx(0.0012, abs=1e-12)


def test_a_failed_send_stops_the_tx_numbering() -> None:
    session = tool._Session(tx_order=[])
    session.sent(0, T_HALF, None)
    session.sent(1, T_HALF + 1, OSError(101, "Network is unreachable"))
    session.sent(2, T_HALF + 2, None)
    session.take_tx(0, T_HALF + 5)  # numbered before the failure: still trusted
    session.take_tx(1, T_HALF + 5)  # after it the numbering may be off by one
    assert session.tx_ns == {0: T_HALF + 5}
    assert session.send_errors == {"Network is unreachable": 1}


# ---- the clock's error estimate --------------------------------------------------------------


def test_error_estimate_from_the_kernel_clock_state() -> None:
    # Synchronised (TIME_OK, STA_UNSYNC clear): S set, the estimated error 250 µs
    # = 250e-6 × 2^32 = 1_073_741.8 units → scale 13 (÷ 8192 = 131.07) → multiplier 132.
    synced = estimate_from(0, 0x0001, 250, 16_000_000)
    assert (synced.synchronized, synced.scale, synced.multiplier) == (True, 13, 132)
    assert synced.seconds >= 250e-6
    # STA_UNSYNC or TIME_ERROR: S clear and the maximum error, 16 s = 2^36 units = 128 × 2^29.
    for state, status in ((0, STA_UNSYNC), (TIME_ERROR, 0)):
        loose = estimate_from(state, status, 250, 16_000_000)
        assert (loose.synchronized, loose.scale, loose.multiplier) == (False, 29, 128)
        assert loose.seconds == 16.0
    # An error of 0 µs is never claimed.
    assert estimate_from(0, 0, 0, 0).seconds >= 1e-6


def test_read_estimate_agrees_with_adjtimex() -> None:
    est = read_estimate()
    libc = ctypes.CDLL(None, use_errno=True)
    tx = _Timex()
    state = libc.adjtimex(ctypes.byref(tx))
    assert est.synchronized == (state != TIME_ERROR and not tx.status & STA_UNSYNC)


# ---- configuration ---------------------------------------------------------------------------


def _config(target: str, params: str) -> str:
    return (
        f'[[test]]\nid = "tw"\ntool = "twamp"\ntarget = "{target}"\ninterval = "1m"\n'
        f"params = {{ {params} }}\n"
    )


def test_config_loads_a_twamp_test(tmp_path: Path) -> None:
    cfg = config.parse(
        _config("::1", "count = 3, dscp = 46"), Path("x.toml"), tools.TOOLS, base=tmp_path
    )
    [spec] = cfg.tests
    assert spec.tool == "twamp" and spec.params.dscp == 46 and spec.params.port == 862
    assert spec.timeout == tool.default_timeout(spec.params)  # (3 − 1) × 1 s + 2 s + 5 s


@pytest.mark.parametrize(
    ("target", "params", "key"),
    [
        ("127.0.0.1", "padding = -1", "test[0].params.padding"),
        ("127.0.0.1", 'variation_of = "oneway"', "test[0].params.variation_of"),
        ("127.0.0.1", "hops = 3", "test[0].params.hops"),
        ("reflector.example.net", "count = 1", "test[0].target"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, target: str, params: str, key: str) -> None:
    with pytest.raises(config.ConfigError, match=rf"^x\.toml:\d+: {re.escape(key)}: "):
        config.parse(_config(target, params), Path("x.toml"), tools.TOOLS, base=tmp_path)
