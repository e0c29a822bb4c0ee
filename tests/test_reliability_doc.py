"""docs/reliability.md names a test for every fault and defence: each name must exist, so the
catalogue cannot silently point at a test that was renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
CATALOGUE_ROWS = (  # the issue's minimum catalogue: each needs a row
    "pdpdeact", "remote closes", "stops answering", "unexpected `RDY`", "POWERED DOWN",
    "tty vanishes", "550-574", "+QIOPEN", "SEND FAIL", "incoming full", "563", "DNS failure",
    "garbage bytes inside", "module reset in the middle", "URCs at every line boundary",
    "`ERROR` to QISEND", "`ERROR` to QIRD", "local client reset", "never reads",
    "1000 connections", "config reload", "SIGTERM under load",
)


def _table_rows() -> list[list[str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _references(cell: str) -> list[tuple[str, str | None]]:
    """(file, test name or None) for every backticked test reference in a cell."""
    refs: list[tuple[str, str | None]] = []
    current = "tests/test_faults.py" if cell.startswith("faults") else None
    for token in re.findall(r"`([^`]+)`", cell):
        if token.startswith("faults "):
            token = token[len("faults "):]
        path, sep, name = token.rpartition("::")
        if sep and not path:
            pass  # `::test_x`: the file named before it in the cell
        elif path:
            current = path if "/" in path else f"tests/{path}"
        elif token.endswith(".py"):
            refs.append((token if "/" in token else f"tests/{token}", None))
            continue
        elif not token.startswith("test_"):
            continue  # a knob, a command or a value, not a test
        if re.search(r"\bfaults\b[^`]*$", cell.split(f"`{token}`")[0]):
            current = "tests/test_faults.py"
        assert current is not None, f"no file for {token!r} in {cell!r}"
        refs.append((current, name or token))
    return refs


def test_every_test_named_in_reliability_md_exists():
    checked = 0
    for row in _table_rows():
        for path, name in _references(row[-1]):
            source = ROOT / path
            assert source.is_file(), f"{path} named in docs/reliability.md does not exist"
            if name is None:
                continue
            func, _, param = name.partition("[")
            text = source.read_text()
            pattern = re.escape(func).replace(r"\*", r"\w*")  # test_parse_config_*: a family
            assert re.search(rf"def {pattern}\(", text), f"{path}::{func} does not exist"
            if param:
                assert f'"{param.rstrip("]")}"' in text, f"{path}::{name}: no such parameter"
            checked += 1
    assert checked >= 60, checked


def test_the_catalogue_has_a_row_for_every_fault_the_issue_lists():
    faults = [row[0] for row in _table_rows()]
    for wanted in CATALOGUE_ROWS:
        assert any(wanted in fault for fault in faults), f"no catalogue row for {wanted!r}"
