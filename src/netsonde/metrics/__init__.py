"""Pure metric functions: no I/O, no clock, numbers in and numbers out."""

from netsonde.metrics.delay import DELAY_KEYS, delay_summary
from netsonde.metrics.pinger import PINGER_KEYS, pinger_summary
from netsonde.metrics.quality import MATHIS_RULES, mathis_rule_name
from netsonde.metrics.stats import mean, median, percentile

__all__ = [
    "DELAY_KEYS",
    "MATHIS_RULES",
    "PINGER_KEYS",
    "delay_summary",
    "mathis_rule_name",
    "mean",
    "median",
    "percentile",
    "pinger_summary",
]
