"""The REST wire form: a run and its test as entries of the archive's store request
(``POST /api/v1/store``: NewTest and NewRun, by test key)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from netsonde.model import Run, TestSpec

REST_PATH = "/api/v1/store"
MAX_ERROR_CHARS = 4000  # the remote refuses a run error longer than 4096 characters


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def rest_test(spec: TestSpec) -> bytes:
    """The test as an entry of the store request's ``tests`` (NewTest)."""
    return _compact(
        {
            "test_id": spec.id,
            "source": spec.source,
            "tool": spec.tool,
            "target": spec.target,
            "params": spec.params_dict(),
        }
    )


def rest_run(run: Run) -> bytes:
    """The run as an entry of the store request's ``runs`` (NewRun, by test key)."""
    out: dict[str, Any] = {
        "run_id": run.run_id,
        "test_key": run.test_key,
        "slot": run.slot,
        "state": None if run.state is None else str(run.state),
        "planned_us": run.planned_us,
    }
    for name in ("actual_us", "end_us"):
        if (value := getattr(run, name)) is not None:
            out[name] = value
    if run.error is not None:
        out["error"] = run.error[:MAX_ERROR_CHARS]
    if (r := run.result) is not None:
        samples = [
            {"seq": p.seq, "rtt_ms": p.rtt_ms, "ttl": p.ttl, "size": p.size, "recv_us": p.recv_us}
            for p in r.replies
        ]
        out["result"] = {
            "sent": r.sent,
            "values": r.values,
            "samples": samples,
            "extra": r.detail(),
        }
    return _compact(out)


def rest_body(tests: Iterable[bytes], runs: Iterable[bytes]) -> bytes:
    """A store request of encoded tests and runs."""
    return b'{"tests":[%s],"runs":[%s]}' % (b",".join(tests), b",".join(runs))
