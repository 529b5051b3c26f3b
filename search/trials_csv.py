"""trials.csv, the flat table of a search's trial records (search/records.py writes it beside trials.jsonl).

Takes: trial records (dicts, records.py's schema). Returns: the CSV text (`csv_text`): the fixed CSV_COLUMNS,
then seconds_<phase> and point.<name> columns in order of appearance; null cells empty, booleans true/false,
list or dict values as JSON.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable

__all__ = ["CSV_COLUMNS", "csv_columns", "csv_text"]

# The fixed leading columns of trials.csv; then seconds_<phase> and point.<name> columns, in order of appearance.
CSV_COLUMNS = ("trial", "trial_id", "status", "score", "accuracy", "latency_ms", "predicted_ms", "params", "macs",
               "activations", "epochs", "hash", "node", "latency_node", "error", "time")


def csv_text(records: list[dict]) -> str:
    """The whole table, header first."""
    columns = csv_columns(records)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        writer.writerow([_cell(_column_value(r, c)) for c in columns])
    return out.getvalue()


def csv_columns(records: Iterable[dict]) -> list[str]:
    """CSV_COLUMNS, then seconds_<phase> and point.<name> for every phase and point name, in order of appearance."""
    seconds: dict[str, None] = {}
    points: dict[str, None] = {}
    for r in records:
        seconds.update(dict.fromkeys(str(k) for k in (r.get("seconds") or {})))
        points.update(dict.fromkeys(str(k) for k in (r.get("point") or {})))
    return [*CSV_COLUMNS, *(f"seconds_{k}" for k in seconds), *(f"point.{k}" for k in points)]


def _column_value(record: dict, column: str) -> Any:
    if column.startswith("seconds_") and column not in CSV_COLUMNS:
        return (record.get("seconds") or {}).get(column[len("seconds_"):])
    if column.startswith("point."):
        return (record.get("point") or {}).get(column[len("point."):])
    return record.get(column)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)  # a list or dict choice value
