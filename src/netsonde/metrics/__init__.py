"""Pure metric functions: no I/O, no clock, numbers in and numbers out."""

from netsonde.metrics.pinger import PINGER_KEYS, pinger_summary
from netsonde.metrics.stats import mean, median, percentile

__all__ = ["PINGER_KEYS", "mean", "median", "percentile", "pinger_summary"]
