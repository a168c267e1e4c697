"""The HTTP service: NMWG/SOAP endpoints, the REST JSON API and /metrics, in one ASGI app."""
