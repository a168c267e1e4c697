"""archive/stores.py: one connection type and versioned migrations on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsonde.archive.stores import Migration, StoreError, migrate, open_store, to_format

V1 = Migration(
    1,
    sqlite="CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL, at BIGINT);\n",
    postgresql="CREATE TABLE things (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, at BIGINT);\n",
)
V2 = Migration(
    2,
    sqlite="CREATE INDEX things_by_name ON things (name);\nALTER TABLE things ADD COLUMN n INT;\n",
    postgresql="CREATE INDEX things_by_name ON things (name);\n"
    "ALTER TABLE things ADD COLUMN n INT;\n",
)


@pytest.fixture
def location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return str(tmp_path / "store.sqlite")
    return str(request.getfixturevalue("pg_url"))


def test_migrations_apply_once_in_order_and_upgrade_an_older_store(location: str) -> None:
    store = open_store(location, "things", [V1])
    with store.transaction() as cur:
        cur.execute("INSERT INTO things (name, at) VALUES (?, ?)", ("a", 2**40))
    store.close()
    store = open_store(location, "things", [V1, V2])  # upgrades, keeps the row
    with store.transaction() as cur:
        cur.execute("UPDATE things SET n = ? WHERE name = ?", (7, "a"))
    rows = store.execute("SELECT name, at, n FROM things").fetchall()
    assert [tuple(r) for r in rows] == [("a", 2**40, 7)]
    assert migrate(store, "things", [V1, V2]) == 2  # nothing left to do
    store.close()


def test_a_newer_schema_is_refused_with_a_clear_error(location: str) -> None:
    open_store(location, "things", [V1, V2]).close()
    with pytest.raises(StoreError, match=r"things schema is version 2, newer than .* \(1\)"):
        open_store(location, "things", [V1])


def test_a_failed_transaction_leaves_nothing_and_errors_are_store_errors(location: str) -> None:
    store = open_store(location, "things", [V1])
    with pytest.raises(StoreError), store.transaction() as cur:
        cur.execute("INSERT INTO things (name) VALUES (?)", ("kept?",))
        cur.execute("INSERT INTO things (name) VALUES (?)", (None,))  # NOT NULL
    assert store.execute("SELECT count(*) FROM things").fetchone()[0] == 0
    store.close()


def test_question_marks_become_format_placeholders_and_percent_signs_stay_literal() -> None:
    assert to_format("SELECT ? WHERE a LIKE '5%' AND b = ?") == (
        "SELECT %s WHERE a LIKE '5%%' AND b = %s"
    )
