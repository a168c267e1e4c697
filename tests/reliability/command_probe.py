"""The config of one ``command`` test run by a daemon with nothing else (no API, no Status MA):
the probe the process-tree tests use."""

from __future__ import annotations

import json
from collections.abc import Sequence


def command_probe_config(
    program: str,
    args: Sequence[str],
    *,
    timeout: float,
    every: str = "2s",
    runs: int = 1,
    extra: str = "",
) -> str:
    # A JSON string is a TOML basic string: quotes, backslashes and newlines escaped alike.
    argv = ", ".join(json.dumps(str(a)) for a in args)
    return f"""
[daemon]
data_dir = "data"
stop_timeout = "1s"

[api]
enabled = false

[status]
enabled = false

[[test]]
id = "probe"
tool = "command"
target = "127.0.0.1"
interval = "{every}"
timeout = "{timeout:g}s"
max_runs = {runs}
params = {{ program = {json.dumps(program)}, args = [{argv}] }}
{extra}"""
