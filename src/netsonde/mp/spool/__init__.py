"""The durable outbox from a measurement point to a remote archive.

``submit`` only enqueues in memory (it is called from the event loop). An *ingest* thread
encodes each run to its wire form once and commits it to a local SQLite outbox (WAL) every
~100 ms; a *deliver* thread posts the oldest rows (by run time) to the remote and deletes them
in one transaction after the remote said yes. A crash between the two re-delivers a batch,
which is harmless: the remote ignores a run id it already has.

Failures are sorted in two kinds. Transient (no connection, timeout, 5xx, 429, and 401/403,
a wrong token being a configuration problem the operator fixes): the rows stay and delivery
backs off (0.5 s doubling to ``max_backoff``). Permanent (400, 413, 422, or an NMWG result code
saying the data is invalid): the batch is bisected until the bad runs are alone, the good ones
are delivered, and each bad one moves to the ``dead_letter`` table with the reason.

Protocols: ``rest`` posts JSON to ``/api/v1/store``; ``nmwg`` posts a PingER
``MeasurementArchiveStoreRequest`` (one metadata/data pair per run) to the PingER MA, which can
carry finished ping runs only: any other run is dead-lettered at ingest with that reason.

``outbox`` the Spool: the outbox and its ingest and deliver threads; ``db`` the outbox file;
``rest`` and ``nmwg`` the two wire forms of a run; ``outcome`` what an answer means for a batch.
"""

from netsonde.mp.spool.db import Entry, Row, read_dead_letters
from netsonde.mp.spool.nmwg import NMWG_PATH, nmwg_message, nmwg_refusal, nmwg_unit
from netsonde.mp.spool.outbox import Protocol, Spool
from netsonde.mp.spool.outcome import Outcome, nmwg_outcome, rest_outcome
from netsonde.mp.spool.rest import REST_PATH, rest_body, rest_run, rest_test

__all__ = [
    "NMWG_PATH",
    "REST_PATH",
    "Entry",
    "Outcome",
    "Protocol",
    "Row",
    "Spool",
    "nmwg_message",
    "nmwg_outcome",
    "nmwg_refusal",
    "nmwg_unit",
    "read_dead_letters",
    "rest_body",
    "rest_outcome",
    "rest_run",
    "rest_test",
]
