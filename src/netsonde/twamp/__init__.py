"""TWAMP-Light (RFC 5357 Appendix I): the test packets (``packets``) and a stateless UDP
reflector (``reflector``). The sender is the ``twamp`` probe, ``netsonde.mp.tools.twamp``."""
