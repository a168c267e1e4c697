"""What every test of ``netsonde config import`` checks of its output: it loads with netsonde's
own config loader, and the loaded tests are the imported ones (import → load → same tests)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from netsonde import probes
from netsonde.config import Config
from netsonde.config.importers import Imported, to_toml
from netsonde.daemon import service
from netsonde.model import TestSpec
from netsonde.units import parse_time

try:  # [registration] is another engineer's section; until it exists, it is checked apart
    from netsonde.registration import SECTIONS as _REGISTRATION

    REGISTRATION_KNOWN = "registration" in _REGISTRATION
except ImportError:  # pragma: no cover - depends on the tree
    REGISTRATION_KNOWN = False

_REGISTRATION_TABLE = re.compile(r"(?ms)^(?:#[^\n]*\n)*\[registration\]\n.*?(?=^\[|^# |\Z)")


def load_imported(imported: Imported, tmp: Path) -> tuple[str, Config]:
    """The TOML of ``imported`` and the Config netsonde loads from it."""
    text = to_toml(imported)
    tomllib.loads(text)  # TOML first: a writer bug should say so, not look like a config error
    loadable = text if REGISTRATION_KNOWN else _REGISTRATION_TABLE.sub("", text)
    path = tmp / "imported.toml"
    path.write_text(loadable, encoding="utf-8")
    return text, service.load_config(path)


def expected_specs(imported: Imported) -> dict[str, dict[str, Any]]:
    """Test id → what the loaded TestSpec must say, from the imported entries."""
    out: dict[str, dict[str, Any]] = {}
    for entry in imported.tests:
        f = entry.fields
        targets = (
            [(f["id"], f["target"])]
            if "target" in f
            else [(f"{f['id']}/{t}", t) for t in f["targets"]]
        )
        for test_id, target in targets:
            out[test_id] = {
                "tool": f["tool"],
                "target": target,
                "interval": f["interval"],
                "offset": f.get("offset", 0.0),
                "slip": f.get("slip"),
                "start": parse_time(f["start"]) if "start" in f else None,
                "until": parse_time(f["until"]) if "until" in f else None,
                "max_runs": f.get("max_runs"),
                "params": probes.get(f["tool"]).Params.model_validate(f["params"]),
            }
    return out


def actual_specs(tests: tuple[TestSpec, ...]) -> dict[str, dict[str, Any]]:
    return {
        t.id: {
            "tool": t.tool,
            "target": t.target,
            "interval": t.schedule.interval,
            "offset": t.schedule.offset,
            "slip": t.schedule.slip,
            "start": t.schedule.start,
            "until": t.schedule.until,
            "max_runs": t.schedule.max_runs,
            "params": t.params,
        }
        for t in tests
    }


def round_trip(imported: Imported, tmp: Path) -> Config:
    """Load the import and check it holds exactly the imported tests."""
    _, cfg = load_imported(imported, tmp)
    assert actual_specs(cfg.tests) == expected_specs(imported)
    return cfg
