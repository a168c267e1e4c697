"""`netsonde ls query` against a real lookup service: a `netsonde run` with `[ls] enabled`,
found from the config or named with --url (a base URL or its NMWG LS URL), answering key=value
queries as a table or JSON, and every failure one line on stderr with exit status 1."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from lxml import etree

from integration.conftest import DaemonProcess
from integration.test_archive_service import free_port
from netsonde.nmwg import ns
from netsonde.nmwg.client import exchange
from netsonde.nmwg.ls import ServiceInfo, ls_key, read_reply, register_request

pytestmark = pytest.mark.integration

TOKEN = "lookup-token-0123456789"
PINGER = "http://ggf.org/ns/nmwg/tools/pinger/2.0/"


def ls_config(port: int) -> str:
    return f"""
[daemon]
data_dir = "data"
name = "ls.test"
listen = "127.0.0.1:{port}"
stop_timeout = "2s"

[ls]
enabled = true
token = "{TOKEN}"
"""


def serving(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:  # no worker listens yet
        return False


@pytest.fixture
def ls(daemon_factory: Callable[[str], DaemonProcess]) -> tuple[DaemonProcess, str]:
    port = free_port()
    d = daemon_factory(ls_config(port))
    d.start()
    base = f"http://127.0.0.1:{port}"
    d.wait_for(lambda: serving(f"{base}/api/v1/lookup/records"), 20)
    return d, base


def register(base: str, body: dict) -> str:
    answer = httpx.post(
        f"{base}/api/v1/lookup/records",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["uri"])


def one_line_failure(done: subprocess.CompletedProcess[str]) -> str:
    """stderr of a command that failed as a user's mistake: exit 1, one line, no traceback."""
    assert done.returncode == 1, done
    err = done.stderr
    assert err.startswith("netsonde: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_ls_query_finds_services_by_type_host_and_event_type(ls: tuple[DaemonProcess, str]) -> None:
    d, base = ls
    ma = register(
        base,
        {
            "type": "service",
            "service-type": ["MA"],
            "service-name": ["pinger MA on a"],
            "service-locator": ["http://a.example.org:8075/perfSONAR_PS/services/pinger/ma"],
            "psservice-eventtypes": [PINGER],
            "ttl": "PT1H",
        },
    )
    owamp = register(
        base,
        {
            "type": "service",
            "service-type": ["owamp"],
            "service-locator": ["tcp://b.example.org:861"],
        },
    )
    host = register(base, {"type": "host", "host-name": ["a.example.org"]})

    table = d.cli("ls", "query", "--type", "ma")  # the local [ls], from --config
    assert table.returncode == 0, table.stderr
    assert "pinger MA on a" in table.stdout and "owamp" not in table.stdout
    assert re.search(r"\b00:59:\d\d\b", table.stdout), table.stdout  # expires in ~1 h
    for header in ("record", "service type", "name", "locator", "expires in"):
        assert header in table.stdout

    assert [r["uri"] for r in d.cli_json("ls", "query")] == [ma, owamp, host]
    by_host = d.cli_json("ls", "query", "--host", "a.example.org")
    assert [r["uri"] for r in by_host] == [ma, host]
    by_event = d.cli_json("ls", "query", "--event-type", PINGER)
    assert [r["uri"] for r in by_event] == [ma]
    assert by_event[0]["service-locator"] == [
        "http://a.example.org:8075/perfSONAR_PS/services/pinger/ma"
    ]
    assert d.cli_json("ls", "query", "--limit", "1") == d.cli_json("ls", "query")[:1]

    # --url: the base URL, or the NMWG LS URL of the same server; no config needed.
    for url in (base, f"{base}/perfSONAR_PS/services/LS"):
        done = d.cli("ls", "query", "--url", url, "--type", "owamp", "--json")
        assert done.returncode == 0, done.stderr
        assert [r["uri"] for r in json.loads(done.stdout)] == [owamp]

    empty = d.cli("ls", "query", "--type", "bwctl")
    assert empty.returncode == 0 and "nothing found at" in empty.stdout
    d.stop()


def test_ls_query_failures_are_one_line(
    ls: tuple[DaemonProcess, str], daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    d, base = ls
    nobody = f"http://127.0.0.1:{free_port()}/"
    err = one_line_failure(d.cli("ls", "query", "--url", nobody))
    assert "cannot reach the lookup service" in err
    err = one_line_failure(d.cli("ls", "query", "--type", "*a" * 9))
    assert "HTTP 400" in err and "wildcards" in err
    err = one_line_failure(d.cli("ls", "query", "--xquery-file", str(tmp_path / "missing.xq")))
    assert "missing.xq" in err
    err = one_line_failure(d.cli("ls", "query", "--xquery", "/", "--type", "MA"))
    assert "--xquery asks by itself" in err
    err = one_line_failure(d.cli("ls", "query", "--url", "ftp://x/"))
    assert "not an http(s) URL" in err
    # An instance without [ls]: from its config there is nothing to ask, named so.
    plain = daemon_factory(
        f'[daemon]\ndata_dir = "data2"\nlisten = "127.0.0.1:{free_port()}"\n', "plain.toml"
    )
    err = one_line_failure(plain.cli("ls", "query"))
    assert "[ls] enabled = false" in err and "--url" in err
    # Without [ls] but registering with one: that one is asked.
    registers = daemon_factory(
        f'[daemon]\ndata_dir = "data3"\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[registration]\nurls = ["{base}/perfSONAR_PS/services/LS"]\ntoken = "{TOKEN}"\n',
        "registers.toml",
    )
    register(base, {"type": "service", "service-locator": ["http://d.example.org/"]})
    found = registers.cli_json("ls", "query", "--host", "d.example.org")
    assert [r["service-locator"] for r in found] == [["http://d.example.org/"]]
    d.stop()


def test_ls_query_xquery_prints_what_the_ls_answers(
    ls: tuple[DaemonProcess, str], tmp_path: Path
) -> None:
    d, base = ls
    service = ServiceInfo("pinger MA on c", "http://c.example.org:8075/perfSONAR_PS/services/ma")
    item = f'<nmwg:metadata xmlns:nmwg="{ns.NMWG}"><nmwg:eventType>{PINGER}</nmwg:eventType>'
    message = register_request(service, [etree.fromstring(item + "</nmwg:metadata>")])
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        reply = exchange(f"{base}/perfSONAR_PS/services/LS", etree.tostring(message), client=http)
    assert read_reply(reply).ok
    key = ls_key(service.access_point)
    query = (
        f'declare namespace nmwg="{ns.NMWG}";\n'
        f' /nmwg:store[@type="LSStore"]/nmwg:metadata[@id="{key}"]'
    )
    shown = d.cli("ls", "query", "--xquery", query)
    assert shown.returncode == 0, shown.stderr
    assert f'id="{key}"' in shown.stdout and service.access_point in shown.stdout
    (as_json,) = d.cli_json("ls", "query", "--xquery", query)
    assert etree.fromstring(as_json).get("id") == key
    file = tmp_path / "count.xq"
    file.write_text(f'declare namespace nmwg="{ns.NMWG}"; count( /nmwg:store/nmwg:data)')
    counted = d.cli("ls", "query", "--xquery-file", str(file), "--url", base)
    assert counted.returncode == 0 and counted.stdout == "1\n", counted
    nothing = d.cli("ls", "query", "--xquery", query.replace(key, "no-such-key"), "--json")
    assert nothing.returncode == 0 and json.loads(nothing.stdout) == []
    err = one_line_failure(d.cli("ls", "query", "--xquery", 'doc("file:///etc/passwd")'))
    assert "error.ls.xmldb" in err
    again = d.cli("ls", "query", "--xquery", query)  # the LS kept answering
    assert again.returncode == 0 and service.access_point in again.stdout
    d.stop()
