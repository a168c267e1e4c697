"""netsonde: scheduled network probes, a measurement archive and perfSONAR-PS compatibility."""

__version__ = "0.1.0"
