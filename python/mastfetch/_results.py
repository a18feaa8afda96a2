"""The binary's outputs (``--json`` events, manifests, plan and verify lines) as astropy Tables.

Download results carry astroquery's manifest columns first (``Local Path``, ``Status``,
``Message``, ``URL``, with astroquery's meaning), then every field of the mastfetch manifest line
of that file, whatever fields the binary writes.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

# mastfetch's manifest status -> astroquery's. COMPLETE: the file is on disk and verified
# (fetched now, found complete from an earlier run, or adopted). SKIPPED: not fetched by choice,
# as astroquery reports an exclusive-access product it may not download. ERROR: failed.
STATUS = {
    "ok": "COMPLETE",
    "skipped": "COMPLETE",
    "adopted": "COMPLETE",
    "duplicate": "COMPLETE",
    "excluded": "SKIPPED",
    "failed": "ERROR",
}

ASTROQUERY_COLUMNS = ("Local Path", "Status", "Message", "URL")


def json_lines(lines: Iterable[str]) -> List[Dict[str, Any]]:
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def read_manifests(folder: str) -> Dict[str, Dict[str, Any]]:
    """The last line recorded for each path in ``folder``'s manifests."""
    found: Dict[str, Dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), "mastfetch-manifest*.jsonl"))):
        try:
            with open(path, encoding="utf-8") as f:
                for line in json_lines(f):
                    if "path" in line:
                        found[line["path"]] = line
        except OSError:
            continue
    return found


def local_path(folder: str, relative: Optional[str]) -> Optional[str]:
    """As astroquery writes it: the destination joined with the file's place under it."""
    if not relative:
        return None
    if folder.startswith("s3://"):
        return folder.rstrip("/") + "/" + relative
    return str(Path(folder) / relative)


def download_rows(
    folder: str,
    events: List[Dict[str, Any]],
    wanted: List[Dict[str, Any]],
    problems: List[str],
    csv_path: Optional[str],
) -> List[Dict[str, Any]]:
    """One row per file: the table's products in table order when a table was given (a product
    the binary could not plan is an ERROR row with its message), else the files in the order
    they finished."""
    manifest = read_manifests(folder)
    files = [e for e in events if e.get("event") == "file"]
    by_uri: Dict[str, Dict[str, Any]] = {}
    for e in files:
        by_uri.setdefault(e.get("uri"), e)
    failed_in_manifest = {
        m.get("uri"): m for m in manifest.values() if m.get("status") == "failed"
    }

    def row_of(event: Dict[str, Any]) -> Dict[str, Any]:
        line = dict(manifest.get(event.get("path"), {}))
        if line.get("uri") != event.get("uri"):
            line = {"uri": event.get("uri"), "path": event.get("path")}
        # This run's outcome, whatever an earlier run recorded for the path.
        line["status"] = event.get("status", line.get("status"))
        line["message"] = event.get("message", line.get("message"))
        line.setdefault("source", event.get("source"))
        return line

    rows: List[Dict[str, Any]] = []
    if wanted:
        for w in wanted:
            uri = w.get("dataURI")
            event = by_uri.get(uri) if uri else None
            if event is None and not uri and w.get("productFilename"):
                name = w["productFilename"]
                event = next(
                    (e for e in files if str(e.get("uri", "")).endswith("/" + name)), None
                )
            if event is not None:
                rows.append(row_of(event))
            elif uri in failed_in_manifest:
                rows.append(dict(failed_in_manifest[uri]))
            else:
                rows.append(
                    {
                        "uri": uri or w.get("productFilename"),
                        "path": None,
                        "status": "failed",
                        "message": _problem_for(w, problems, csv_path)
                        or "not planned (see the warnings)",
                    }
                )
    else:
        rows = [row_of(e) for e in files]
    return [_with_astroquery_columns(folder, r) for r in rows]


def _problem_for(w: Dict[str, Any], problems: List[str], csv_path: Optional[str]) -> Optional[str]:
    """The binary's error line about this table row: it names the CSV line or the URI."""
    marks = []
    if csv_path is not None and "line" in w:
        marks.append(f"{csv_path}:{w['line']}: ")
    if w.get("dataURI"):
        marks.append(str(w["dataURI"]))
    for p in problems:
        for mark in marks:
            if mark in p:
                tail = p.split(mark, 1)[1] if mark.endswith(": ") else p
                return tail.strip()
    return None


def _with_astroquery_columns(folder: str, line: Dict[str, Any]) -> Dict[str, Any]:
    status = STATUS.get(str(line.get("status")), "ERROR")
    row = {
        "Local Path": local_path(folder, line.get("path")),
        "Status": status,
        "Message": line.get("message"),
        # astroquery gives the URL only where the file is not there (to retry by hand).
        "URL": None if status == "COMPLETE" else line.get("url"),
    }
    row.update(line)
    return row


def to_table(rows: List[Dict[str, Any]], first: Iterable[str] = ()) -> Any:
    """An astropy Table of ``rows``: columns in first-seen order (``first`` leading); integer
    and float columns with gaps are masked, text columns with gaps hold None (as astroquery's
    manifest does)."""
    from astropy.table import MaskedColumn, Table

    names: List[str] = list(first)
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    table = Table()
    for name in names:
        values = [r.get(name) for r in rows]
        present = [v for v in values if v is not None]
        kinds = {type(v) for v in present}
        if present and kinds <= {int} or (present and kinds <= {int, float} and float in kinds):
            dtype = "int64" if kinds <= {int} else "float64"
            fill = 0 if dtype == "int64" else float("nan")
            data = [fill if v is None else v for v in values]
            if len(present) == len(values):
                table[name] = data
                table[name] = table[name].astype(dtype)
            else:
                table[name] = MaskedColumn(data, mask=[v is None for v in values], dtype=dtype)
        elif present and kinds <= {bool} and len(present) == len(values):
            table[name] = values
        elif present and kinds <= {str} and len(present) == len(values):
            table[name] = values
        else:
            col = [v if v is None or isinstance(v, (str, int, float, bool)) else json.dumps(v) for v in values]
            import numpy as np

            arr = np.empty(len(col), dtype=object)
            arr[:] = col
            table[name] = arr
    return table
