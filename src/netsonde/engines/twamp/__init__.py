"""TWAMP-Light (RFC 5357 Appendix I).

packets    the unauthenticated TWAMP-Test packets, NTP timestamps, error estimates (pure)
udp        sockets with kernel receive timestamps, arriving TTL and TOS
clock      the error estimate of this host's clock (adjtimex)
reflector  the stateless Session-Reflector (``python -m netsonde.engines.twamp.reflector``)

The Session-Sender is the ``twamp`` probe, ``netsonde.probes.twamp``.
"""
