"""Lookup service: who serves what (registry with leases, and the registrar client)."""
