"""The NMWG wire form: a finished ping run as one metadata/data pair of a PingER
``MeasurementArchiveStoreRequest`` (PROTOCOL.md §4.12: the agent's Store message), in the
PingER wire format of :mod:`netsonde.nmwg.pinger`, which the MA's store handler reads."""

from __future__ import annotations

import time
from collections.abc import Sequence

from lxml import etree

from netsonde.model import Run, RunState, TestSpec
from netsonde.nmwg import build, ns, pinger

NMWG_PATH = pinger.MA_PATH


def metadata_id(run_id: str) -> str:
    """The id of a run's metadata: a result code in the answer names its run by it."""
    return f"m-{run_id}"


def nmwg_refusal(spec: TestSpec, run: Run) -> str | None:
    """Why the run cannot be said in a PingER store request; None when it can."""
    if spec.tool != "ping":
        return f"protocol nmwg carries ping results only; tool {spec.tool!r} has no NMWG form"
    if run.state is not RunState.FINISHED or run.result is None:
        return f"protocol nmwg carries finished ping runs only; this run is {run.state}"
    return None


def nmwg_unit(spec: TestSpec, run: Run, source: str) -> bytes:
    """The run as one metadata/data pair; ids derived from the run id."""
    md_id = metadata_id(run.run_id)
    md = build.element("nmwg:metadata", {"id": md_id})
    ids = (f"s-{run.run_id}", f"p-{run.run_id}")
    pinger.add_test(md, ids, source, spec.target, spec.params_dict())
    build.element("nmwg:eventType", text=pinger.EVENT_TYPE, parent=md)
    data = build.element("nmwg:data", {"id": f"d-{run.run_id}", "metadataIdRef": md_id})
    pinger.add_run(data, run)
    return etree.tostring(md) + etree.tostring(data)


def nmwg_message(units: Sequence[bytes]) -> bytes:
    """The store request of encoded units, in the SOAP envelope."""
    head = (
        f'<nmwg:message xmlns:nmwg="{ns.NMWG}" type="MeasurementArchiveStoreRequest"'
        f' id="spool-{time.time_ns()}">'
    ).encode()
    return build.ENVELOPE_HEAD + head + b"".join(units) + b"</nmwg:message>" + build.ENVELOPE_TAIL
