"""NMWG XML, the message format of the perfSONAR-PS protocol (its digest: PROTOCOL.md; the
project's own vectors: tests/vectors).

``ns``       canonical prefixes and namespace URIs
``parse``    hardened parsing of untrusted requests, prefix normalisation
``message``  the message model: units of work, merge/filter chains, select parameters
``build``    responses: canonical prefixes, unique ids, result codes, the SOAP envelope
``codes``    result codes and :class:`NMWGError`
"""

from netsonde.nmwg.codes import NMWGError
from netsonde.nmwg.message import Message, Select, Unit, UnitFailure
from netsonde.nmwg.parse import parse_message

__all__ = ["Message", "NMWGError", "Select", "Unit", "UnitFailure", "parse_message"]
