"""Times no answer could print, against a real daemon: ``/api/v1/links/{id}/status?at=
999999999999`` once answered 500, and a Status MA store of ``timeValue=253402300800`` made
``/api/v1/links`` answer 500 for every link, forever. Now each such time is the client's error
where it enters (HTTP 400 in the REST error shape, an NMWG error code, never internal_error),
a row stored past 9999 by an older version is read inside the range, and every other link
keeps answering."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from integration.conftest import DaemonProcess
from netsonde.nmwg import ns

TOKEN = "value-ranges-store-token-0123"
STATUS = "/perfSONAR_PS/services/status"
LINK_STATUS = "http://ggf.org/ns/nmwg/characteristic/link/status/20070809"
A = "urn:ogf:network:domain=test:node=r1:port=eth0:link=A"
B = "urn:ogf:network:domain=test:node=r2:port=eth0:link=B"
C = "urn:ogf:network:domain=test:node=r3:port=eth0:link=C"
LAST = 253_402_300_799  # 9999-12-31T23:59:59Z

CONFIG = """
[daemon]
data_dir = "data"
listen = "127.0.0.1:{port}"
stop_timeout = "2s"

[api]
token = "{token}"
"""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Http:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with _NO_PROXY.open(self.base + path, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
        except OSError as e:
            return 0, str(e)

    def nmwg(self, body: str, **headers: str) -> list[str]:
        """The result codes (error.*, success.*) of an NMWG request to the Status MA."""
        request = urllib.request.Request(self.base + STATUS, data=body.encode(), headers=headers)
        with _NO_PROXY.open(request, timeout=10) as r:
            assert r.status == 200
            answer = etree.fromstring(r.read())
        return [
            e.text or ""
            for e in answer.iter(ns.clark("nmwg:eventType"))
            if (e.text or "").startswith(("error.", "success."))
        ]


def store(link: str, t: int | str) -> str:
    datum = (
        f'<ifevt:datum xmlns:ifevt="{ns.IFEVT}" timeType="unix" timeValue="{t}">'
        "<ifevt:stateAdmin>normaloperation</ifevt:stateAdmin><ifevt:stateOper>up</ifevt:stateOper>"
        "</ifevt:datum>"
    )
    return (
        f'<nmwg:message xmlns:nmwg="{ns.NMWG}" type="MeasurementArchiveStoreRequest" id="s">'
        f'<nmwg:metadata id="m"><topoid:subject xmlns:topoid="{ns.TOPOID}">{link}</topoid:subject>'
        f"<nmwg:eventType>{LINK_STATUS}</nmwg:eventType><nmwg:parameters>"
        '<nmwg:parameter name="update">yes</nmwg:parameter></nmwg:parameters></nmwg:metadata>'
        f'<nmwg:data id="d" metadataIdRef="m">{datum}</nmwg:data></nmwg:message>'
    )


def point(link: str, t: str) -> str:
    return (
        f'<nmwg:message xmlns:nmwg="{ns.NMWG}" type="SetupDataRequest" id="q">'
        f'<nmwg:metadata id="m"><topoid:subject xmlns:topoid="{ns.TOPOID}">{link}</topoid:subject>'
        f"<nmwg:eventType>{LINK_STATUS}</nmwg:eventType><nmwg:parameters>"
        f'<nmwg:parameter name="time">{t}</nmwg:parameter></nmwg:parameters></nmwg:metadata>'
        '<nmwg:data id="d" metadataIdRef="m"/></nmwg:message>'
    )


def assert_refused(http: Http, path: str, fragment: str) -> None:
    code, body = http.get(path)
    assert code == 400, (path, code, body)
    assert set(body) == {"error"} and fragment in body["error"], body


def test_times_past_9999_are_the_clients_error_and_every_link_still_answers(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    port = _free_port()
    d = daemon_factory(CONFIG.format(port=port, token=TOKEN))
    proc = d.start()
    http = Http(port)
    d.wait_for(lambda: http.get("/api/v1/links")[0] == 200, 30)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    now = int(time.time())
    for link in (A, B):
        assert http.nmwg(store(link, now), **auth) == ["success.ma.added"]

    # A store past 9999 (the one that once broke /api/v1/links): refused, nothing stored.
    for t in (LAST + 1, "9" * 15, 2**63 - 1):
        assert http.nmwg(store(C, t), **auth) == ["error.ma.query.invalid_timestamp_type"]
    # Selects past 9999: error.ma.select, not internal_error.
    for t in ("999999999999", "1e30", str(2**63 - 1)):
        assert http.nmwg(point(A, t)) == ["error.ma.select"]
    # REST time parameters past 9999: 400 with the REST error shape, not 500.
    assert_refused(http, f"/api/v1/links/{A}/status?at=999999999999", "out of range")
    assert_refused(http, f"/api/v1/links/{A}/status?at=9999-12-31T23:59:59-05:00", "out of range")
    assert_refused(http, f"/api/v1/links/{A}/status?from=0&to=253402300800", "out of range")
    assert_refused(http, f"/api/v1/links/{A}/status?at=1e30", "invalid time")
    assert_refused(http, f"/api/v1/links/{A}/status?at={2**63 - 1}", "invalid time")
    assert_refused(http, "/api/v1/runs?from=999999999999", "out of range")
    assert_refused(http, "/api/v1/results?until=9999-12-31T23:59:59-05:00", "out of range")

    code, body = http.get("/api/v1/links")
    assert code == 200, body
    assert [x["link_id"] for x in body["links"]] == [A, B]

    # A row an older version stored past 9999, written behind the daemon's back: read inside
    # the range, and the other links untouched.
    db = sqlite3.connect(tmp_path / "data" / "status.sqlite", timeout=10)
    with db:
        db.execute("UPDATE link_status SET end_time = ? WHERE link_id = ?", (LAST + 1, B))
    db.close()
    code, body = http.get("/api/v1/links")
    assert code == 200, body
    latest = {x["link_id"]: x["latest"] for x in body["links"]}
    assert latest[A]["end"] == now
    assert (latest[B]["end"], latest[B]["end_iso"]) == (LAST, "9999-12-31T23:59:59Z")
    for link in (A, B):
        code, body = http.get(f"/api/v1/links/{link}/status?history=true")
        assert code == 200 and len(body["ranges"]) == 1, body
    assert http.nmwg(point(B, str(now))) == []  # a datum, no error
    assert proc.poll() is None, d.output()
    assert "Traceback" not in d.output() and "internal_error" not in d.output()
    d.stop()
    assert proc.returncode == 0, d.output()


RELOADABLE = """
[daemon]
data_dir = "data"
stop_timeout = "2s"

[api]
enabled = false

[status]
enabled = false

[[test]]
id = "n"
tool = "noop"
target = "n"
interval = "1s"
"""

DEEP = "[" * 100_000 + "]" * 100_000
SECOND = '[[test]]\nid = "m"\ntool = "noop"\ntarget = "n"\ninterval = "5s"\n'
# Configs a SIGHUP may find (each a change of RELOADABLE), with the start of the error each gives.
BAD_RELOADS = [
    (f"{RELOADABLE}x = {DEEP}\n", ":17: arrays or inline tables nested 100000 deep"),
    (
        RELOADABLE.replace("[api]\n", '[api]\ntoken = "hunter2-short"\n'),
        ":7: api.token: String should have at least 16 characters (value not shown",
    ),
    (
        RELOADABLE.replace('interval = "1s"', "interval = 1e300"),
        ":16: test[0].interval: Input should be less than or equal to 31622400",
    ),
    (RELOADABLE + SECOND, ":20: test[1].target: test 'm' has the same tool, target and params"),
]


def _reload_error(status_json: Path) -> str | None:
    """The daemon's own word (``netsonde status`` would read the bad config itself)."""
    try:
        error = json.loads(status_json.read_text()).get("reload_error")
    except (FileNotFoundError, json.JSONDecodeError):  # not yet, or being replaced
        return None
    return None if error is None else str(error)


def test_bad_reloads_are_refused_in_one_line_without_the_secret(
    daemon_factory: Callable[[str], DaemonProcess], tmp_path: Path
) -> None:
    """A SIGHUP with a nesting bomb once died in RecursionError, silently; a short token was
    quoted in the log and status.json; interval = 1e300 was taken."""
    d = daemon_factory(RELOADABLE)
    proc = d.start()
    d.wait_for(lambda: d.cli_json("status", missing={}).get("started_us"), 30)
    status_json = tmp_path / "data" / "status.json"
    for text, expected in BAD_RELOADS:
        d.config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        error = d.wait_for(lambda: _reload_error(status_json), 15)
        assert error == f"{d.config}{expected}" or error.startswith(f"{d.config}{expected}"), error
        assert "\n" not in error
        d.config.write_text(RELOADABLE)  # a good config clears the error
        proc.send_signal(signal.SIGHUP)
        d.wait_for(lambda: _reload_error(status_json) is None, 15)
    assert proc.poll() is None, d.output()
    assert d.output().count("reload refused, keeping the running config") == len(BAD_RELOADS)
    assert "hunter2" not in d.output() and "hunter2" not in status_json.read_text()
    assert "RecursionError" not in d.output() and "Traceback" not in d.output()
    d.stop()
    assert proc.returncode == 0, d.output()
