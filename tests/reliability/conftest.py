"""The real-daemon fixtures of the integration tests, for the fault tests too."""

from integration.conftest import daemon_factory

__all__ = ["daemon_factory"]
