"""Label files (pairs, queries, qrels, click logs, documents): one JSON object a line, or TSV cells; what
is wrong with a line, in words."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence


def parse_object_line(line: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """The line's object. ``ValueError`` says what is wrong: not JSON (and where), not an object, or which
    ``required`` fields are missing; callers add the file and line and raise their own error."""
    try:
        value = json.loads(line, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} column {exc.colno}" if exc.msg.endswith(" at") else f"{exc.msg} at column {exc.colno}"
        raise ValueError(f"not valid JSON ({where})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {_json_type(value)}")
    missing = [key for key in required if value.get(key) is None]
    if missing:
        raise ValueError(f"missing required field(s) {', '.join(missing)}")
    return value


def record_id(raw: Any) -> str:
    """A record's ``_id`` as text: a string, or an integer as written, stripped (corpus.jsonl and query files
    alike). Anything else was stored as its Python repr ("{'a': 1}", "True"), and 1e2 as "100.0", which no
    qrels id "100" matched. ``ValueError`` says what is wrong; callers add where, and refuse an empty id."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        shown = json.dumps(raw, ensure_ascii=False)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ValueError(f"_id must be a string or an integer, got {shown}; write the id as a JSON string")
    return str(raw).strip()


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: Python reads them, and results carrying them then break every strict
    JSON reader (a browser, jq, another language's parser)."""
    raise ValueError(f"not valid JSON ({name} is not a JSON value: write null, or the number as text)")


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def label_file_lines(path: Path, error: type[Exception] = ValueError) -> list[str]:
    """The lines of a label file (pairs, queries, qrels, click log): UTF-8, with or without the byte-order
    mark that Excel and Notepad write (it was read as part of the first id or header). ``error`` (the
    caller's own class) names the line of a byte that is not UTF-8 (it ended in a traceback)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): save the file as "
                         "UTF-8") from None
    return _lines(text)


def _lines(text: str) -> list[str]:
    r"""The lines with their ends, split at "\n" only: splitlines() also split at U+2028, U+2029 and U+0085,
    which JSON allows raw inside a string and a TSV cell may hold, so such a row failed as two broken ones."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


#: What a cell that csv_quoted finds is told.
CSV_QUOTING = "CSV-style quoting (a cell in quotes, its own quotes doubled): save without quotes, or use JSONL."


def tsv_cells(line: str) -> list[str]:
    """A TSV label line's cells, split at tabs (no quoting: a cell's quotes are its own), less trailing
    empty ones (a row padded with tabs is no extra column)."""
    row = line.rstrip("\r\n").split("\t")
    while row and not row[-1].strip():
        row.pop()
    return row


def csv_quoted(cell: str) -> bool:
    """A cell as csv.writer and pandas' to_csv save one holding a '"' (in quotes, its own doubled): read as
    written it would be used with them, and a query fingerprinted so (eval would not refuse it)."""
    cell = cell.strip()
    return len(cell) >= 2 and cell[0] == cell[-1] == '"' and '""' in cell[1:-1]
