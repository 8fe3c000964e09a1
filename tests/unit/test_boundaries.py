"""The service-boundary check of ``make lint`` (deploy/scripts/check_boundaries.py).

Each test builds a small repository in a temporary directory (two services, their migrations,
a baseline) and runs the script on it as ``make lint`` does, in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "scripts" / "check_boundaries.py"
BASELINE = "deploy/scripts/boundaries_baseline.txt"

CLEAN_EDGE = '''"""The edge's store: edge.accounts; ``ledger.receipts`` is named only in prose."""

from tollway.edge import errors
from tollway.events import topics

SELECT_ACCOUNT = "SELECT id FROM edge.accounts WHERE id = $1"
TOPIC = "ledger.events"  # a topic name, not a table
EVENT_TYPE = "ledger.topped_up"


def where() -> str:
    """Not here either: ``SELECT * FROM ledger.receipts`` in a docstring is prose."""
    return f"{topics.LEDGER_EVENTS} read by {errors.__name__}"
'''

LEDGER_MIGRATION = """CREATE SCHEMA IF NOT EXISTS ledger;
CREATE TABLE IF NOT EXISTS ledger.receipts (request_id text PRIMARY KEY, body jsonb NOT NULL);
"""


def make_repo(root: Path, edge_store: str = CLEAN_EDGE, baseline: str = "") -> Path:
    for svc in ("edge", "ledger"):
        (root / "services" / svc / "tollway" / svc / "migrations").mkdir(parents=True)
    (root / "services/ledger/tollway/ledger/migrations/001_ledger.sql").write_text(LEDGER_MIGRATION)
    (root / "services/edge/tollway/edge/store.py").write_text(edge_store)
    (root / "deploy/scripts").mkdir(parents=True)
    (root / BASELINE).write_text(baseline)
    return root


def check(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_passes_on_a_tree_where_each_service_names_only_its_own_schema(tmp_path: Path) -> None:
    result = check(make_repo(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_fails_on_sql_naming_another_services_schema(tmp_path: Path) -> None:
    planted = CLEAN_EDGE + '\nRECEIPT = """\nSELECT body\nFROM ledger.receipts WHERE id = $1"""\n'
    root = make_repo(tmp_path, planted)
    result = check(root)
    assert result.returncode == 1
    lines = planted.splitlines()
    line = next(n for n, text in enumerate(lines, start=1) if text.startswith("FROM ledger"))
    assert f"services/edge/tollway/edge/store.py:{line}: ledger.receipts:" in result.stderr
    assert "names the ledger service's schema" in result.stderr
    assert "libs/events" in result.stderr


def test_fails_on_another_services_table_named_outside_sql(tmp_path: Path) -> None:
    # No SQL keyword, but `receipts` is a relation of the ledger's migrations.
    root = make_repo(tmp_path, CLEAN_EDGE + 'TABLE = "ledger.receipts"\n')
    result = check(root)
    assert result.returncode == 1
    assert "ledger.receipts" in result.stderr


def test_fails_on_a_migration_reading_another_schema(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    sql = "-- copies from ledger.receipts once\nINSERT INTO edge.r SELECT * FROM ledger.receipts;\n"
    (root / "services/edge/tollway/edge/migrations/002_copy.sql").write_text(sql)
    result = check(root)
    assert result.returncode == 1
    assert "services/edge/tollway/edge/migrations/002_copy.sql:2: ledger.receipts:" in (
        result.stderr
    )
    assert ":1:" not in result.stderr  # the comment is not code


def test_fails_on_importing_another_services_package(tmp_path: Path) -> None:
    planted = CLEAN_EDGE + "\nfrom tollway.ledger import finance_store\n"
    root = make_repo(tmp_path, planted)
    result = check(root)
    assert result.returncode == 1
    line = len(planted.splitlines())
    assert (
        f"services/edge/tollway/edge/store.py:{line}: tollway.ledger.finance_store: imports the "
        "ledger service's package"
    ) in result.stderr


def test_passes_on_a_violation_listed_in_the_baseline(tmp_path: Path) -> None:
    planted = CLEAN_EDGE + "\nimport tollway.ledger.recon\n"
    root = make_repo(
        tmp_path, planted, "# known\nservices/edge/tollway/edge/store.py tollway.ledger.recon\n"
    )
    result = check(root)
    assert result.returncode == 0, result.stderr


def test_fails_when_a_baseline_entry_no_longer_occurs_and_prune_drops_it(tmp_path: Path) -> None:
    root = make_repo(tmp_path, baseline="services/edge/tollway/edge/store.py ledger.receipts\n")
    result = check(root)
    assert result.returncode == 1
    assert "'services/edge/tollway/edge/store.py ledger.receipts' no longer occurs" in (
        result.stderr
    )
    assert check(root, "--prune").returncode == 0
    assert "ledger.receipts" not in (root / BASELINE).read_text()
    assert check(root).returncode == 0


def test_fails_on_an_f_string_naming_another_services_schema(tmp_path: Path) -> None:
    planted = (
        CLEAN_EDGE + '\ndef q(col: str) -> str:\n    return f"SELECT {col} FROM ledger.holds"\n'
    )
    result = check(make_repo(tmp_path, planted))
    assert result.returncode == 1
    line = len(planted.splitlines())
    assert f"store.py:{line}: ledger.holds: names the ledger service's schema" in result.stderr


def test_names_the_line_of_the_violation_in_concatenated_literals(tmp_path: Path) -> None:
    planted = CLEAN_EDGE + '\nSQL = (\n    "SELECT body "\n    "FROM ledger.receipts"\n)\n'
    result = check(make_repo(tmp_path, planted))
    assert result.returncode == 1
    line = len(planted.splitlines()) - 1
    assert f"store.py:{line}: ledger.receipts:" in result.stderr


def test_stops_with_the_place_of_a_file_it_cannot_parse(tmp_path: Path) -> None:
    result = check(make_repo(tmp_path, CLEAN_EDGE + "\ndef broken(:\n"))
    assert result.returncode == 2
    assert "services/edge/tollway/edge/store.py:" in result.stderr
    assert "cannot parse" in result.stderr


def test_fails_when_the_docs_debt_table_differs_from_the_baseline(tmp_path: Path) -> None:
    planted = CLEAN_EDGE + "\nimport tollway.ledger.recon\n"
    root = make_repo(
        tmp_path, planted, "services/edge/tollway/edge/store.py tollway.ledger.recon\n"
    )
    (root / "docs").mkdir()
    begin = "<!-- boundaries:begin (generated by deploy/scripts/check_boundaries.py) -->"
    (root / "docs/architecture.md").write_text(f"# Debt\n\n{begin}\n<!-- boundaries:end -->\n")
    result = check(root)
    assert result.returncode == 1
    assert "docs/architecture.md: the known-debt table differs" in result.stderr
    assert check(root, "--write-docs").returncode == 0
    assert (
        "| edge | `tollway.ledger.recon` | `store.py` |"
        in (root / "docs/architecture.md").read_text()
    )


def test_this_repository_crosses_no_boundary_outside_the_baseline() -> None:
    """The rule holds on the code itself (CI runs this; ``make lint`` runs the script too)."""
    result = check(SCRIPT.parents[2])
    assert result.returncode == 0, result.stdout + result.stderr
