"""NMWG result codes (PROTOCOL.md §3.5) and the error that carries one.

A result code travels as the ``nmwg:eventType`` of a result metadata, its text as the
``nmwgr:datum`` of the paired data. Services raise :class:`NMWGError`; the endpoint turns it
into that pair (per unit) or into an ``ErrorResponse`` (whole message).
"""

from __future__ import annotations

SUCCESS_ECHO = "success.echo"
SUCCESS_MA_ADDED = "success.ma.added"
SUCCESS_LS_REGISTER = "success.ls.register"
SUCCESS_LS_DEREGISTER = "success.ls.deregister"
SUCCESS_LS_KEEPALIVE = "success.ls.keepalive"
SUCCESS_LS_QUERY = "success.ls.query"

ACTION_NOT_SUPPORTED = "error.common.action_not_supported"
EVENT_TYPE_NOT_SUPPORTED = "error.common.event_type_not_supported"
NO_METADATA_DATA_PAIR = "error.common.no_metadata_data_pair"
STRUCTURE = "error.common.structure"
MERGE = "error.common.merge"
INTERNAL_ERROR = "error.common.internal_error"
AUTHENTICATION = "error.common.authentication"  # netsonde: store without the right token
TIMEOUT = "error.common.timeout"
TRANSPORT = "error.common.transport"
PARSE_ERROR = "error.transport.parse_error"
STORAGE_OPEN = "error.common.storage.open"
STORAGE_FETCH = "error.common.storage.fetch"
STORAGE_UPDATE = "error.common.storage.update"

MA_SUBJECT = "error.ma.subject"
MA_SELECT = "error.ma.select"
MA_PARAMETERS = "error.ma.parameters"
MA_QUERY_INCOMPLETE_DATA = "error.ma.query.incomplete_data"
MA_QUERY_INVALID_TIMESTAMP_TYPE = "error.ma.query.invalid_timestamp_type"
MA_STORAGE = "error.ma.storage"
MA_STORAGE_RESULT = "error.ma.storage_result"

LS_REGISTER_MISSING_VALUE = "error.ls.register.missing_value"
LS_REGISTER_KEY_NOT_FOUND = "error.ls.register.key_not_found"
LS_REGISTER_DATA_TRIGGER_MISSING = "error.ls.register.data_trigger_missing"
LS_DEREGISTER_KEY_NOT_FOUND = "error.ls.deregister.key_not_found"
LS_KEEPALIVE_KEY_NOT_FOUND = "error.ls.keepalive.key_not_found"
LS_QUERY_EVENT_TYPE = "error.ls.query.eventType"
LS_QUERY_QUERY_NOT_FOUND = "error.ls.query.query_not_found"
LS_QUERY_EMPTY_RESULTS = "error.ls.query.empty_results"
LS_XMLDB = "error.ls.xmldb"
LS_KEY_NOT_REGISTERED = "error.ls.key.not_registered"
LS_KEY_SERVICE_MISSING = "error.ls.key.service_missing"
# netsonde: a registration past a registry limit (record size, records per registrant); a
# query past its time or its answer's size.
LS_REGISTER_REFUSED = "error.ls.register.refused"
LS_QUERY_TIMEOUT = "error.ls.query.timeout"
LS_QUERY_TOO_LARGE = "error.ls.query.too_large"
HLS_REGISTER = "error.hls.register"  # 2009 hLS: a gLS summary or synchronization sent to it

# PingER answers with URI-style status codes instead (Datatypes::EventTypes::Status).
PINGER_FAILURE_METADATAKEY = "http://schemas.perfsonar.net/status/failure/metadatakey/1.0/"
PINGER_FAILURE_SETUPDATA = "http://schemas.perfsonar.net/status/failure/setupdata/1.0/"

INTERNAL_ERROR_TEXT = "An internal error occurred while servicing this metadata/data block"


class NMWGError(Exception):
    """A failure the client is told about as an NMWG result code, never as a traceback."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class LimitExceeded(NMWGError):
    """A request past one of its :class:`netsonde.limits.RequestLimits`: ``what`` says how much
    was allowed and the text ends with the ``[api]`` key that sets it, e.g. "request has more
    than 200000 elements (max_elements)"."""

    def __init__(self, code: str, what: str, key: str) -> None:
        super().__init__(code, f"{what} ({key})")
        self.key = key
