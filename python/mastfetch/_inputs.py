"""What the user holds, turned into the binary's own inputs.

A product table (astropy Table or pandas DataFrame, as astroquery's ``get_product_list`` and
``filter_products`` return) becomes a CSV file given as ``@items.csv``, de-duplicated by
``dataURI`` the way astroquery de-duplicates (first row kept, order kept), so each product is
fetched once and lands under the ``obs_collection``/``obs_id`` of the row astroquery would keep.
A list of selection items becomes a list file; query keywords become flags.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

# The columns the binary's CSV reader understands, in the order written.
CSV_COLUMNS = ("dataURI", "productFilename", "obs_id", "obs_collection", "size", "dataRights")

# Flags the module sets itself: giving them as keywords would break the conversation with the
# binary (its JSON events on stdout, its destination).
RESERVED = {"json", "no_progress", "quiet", "format", "dest", "dry_run", "dir"}


@dataclass
class Selection:
    """Arguments naming what to fetch, and what the module knows about each wanted product."""

    args: List[str] = field(default_factory=list)
    # One entry per de-duplicated table row, in table order: the CSV columns written for it
    # and its CSV line number ("line"). Empty when the selection was not a table.
    rows: List[Dict[str, Any]] = field(default_factory=list)
    csv_path: Optional[str] = None
    duplicates_removed: int = 0

    @property
    def is_table(self) -> bool:
        return self.csv_path is not None


def _is_astropy_table(obj: Any) -> bool:
    return hasattr(obj, "colnames") and hasattr(obj, "columns") and hasattr(obj, "meta")


def _is_astropy_row(obj: Any) -> bool:
    return type(obj).__name__ == "Row" and hasattr(obj, "table") and hasattr(obj, "colnames")


def _is_dataframe(obj: Any) -> bool:
    # Checked by module name so that pandas is never imported for other inputs.
    return type(obj).__module__.split(".")[0] == "pandas" and hasattr(obj, "columns")


def is_table(obj: Any) -> bool:
    return _is_astropy_table(obj) or _is_astropy_row(obj) or _is_dataframe(obj)


def _plain(value: Any) -> Any:
    """A table cell as a plain Python value; masked, NaN and empty cells are None."""
    if value is None:
        return None
    if getattr(value, "mask", False) is True:
        return None
    if type(value).__name__ == "MaskedConstant":
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    # pandas' missing-value markers (NA, NaT) say so when compared.
    try:
        if value != value:
            return None
    except (TypeError, ValueError):
        return None
    return value


def _columns(table: Any) -> Dict[str, List[Any]]:
    """Column name -> plain values, for an astropy Table/Row or a pandas DataFrame."""
    if _is_astropy_row(table):
        table = table.table[table.index : table.index + 1]
    if _is_dataframe(table):
        return {str(c): [_plain(v) for v in table[c].tolist()] for c in table.columns}
    return {str(c): [_plain(v) for v in table[c]] for c in table.colnames}


def _size(value: Any) -> str:
    if value is None:
        return ""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return ""
    if f != f or f < 0 or f != int(f):
        return ""
    return str(int(f))


def table_to_csv(table: Any, path: str) -> Selection:
    """Write the product table as the CSV the binary reads; de-duplicate as astroquery does."""
    cols = _columns(table)
    names = set(cols)
    file_col = "productFilename" if "productFilename" in names else "Filename"
    if "dataURI" not in names and file_col not in names:
        raise ValueError(
            "the product table needs a dataURI, productFilename or Filename column "
            f"(it has: {', '.join(sorted(names)) or 'none'})"
        )
    n = len(next(iter(cols.values()))) if cols else 0

    def cell(col: str, i: int) -> Any:
        values = cols.get(col)
        return None if values is None else values[i]

    sel = Selection(csv_path=path)
    seen = set()
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for i in range(n):
            uri = cell("dataURI", i)
            filename = cell(file_col, i)
            # astroquery keeps the first row of each dataURI (np.unique's first occurrence,
            # in table order); rows without a URI are told apart by collection and name.
            key = ("uri", uri) if uri is not None else ("file", cell("obs_collection", i), filename)
            if key in seen:
                sel.duplicates_removed += 1
                continue
            seen.add(key)
            if filename is not None:
                filename = os.path.basename(str(filename))
            row = {
                "dataURI": uri,
                "productFilename": filename,
                "obs_id": cell("obs_id", i),
                "obs_collection": cell("obs_collection", i),
                "size": _size(cell("size", i)),
                "dataRights": cell("dataRights", i),
            }
            w.writerow(["" if row[c] is None else str(row[c]) for c in CSV_COLUMNS])
            row["line"] = len(sel.rows) + 2  # the header is line 1
            sel.rows.append(row)
    sel.args.append("@" + path)
    return sel


def items_to_file(items: Iterable[Any], path: str) -> Selection:
    """Selection items (URIs, file names, s3:// prefixes): a list file; ``@FILE`` items stay
    arguments (the binary does not follow ``@`` inside a list)."""
    sel = Selection()
    listed: List[str] = []
    for item in items:
        item = _plain(item)
        if item is None:
            continue
        item = str(item)
        if item.startswith("@"):
            sel.args.append(item)
        else:
            listed.append(item)
    if listed:
        with open(path, "w", encoding="utf-8") as f:
            for item in listed:
                f.write(item.replace("\n", " ") + "\n")
        sel.args.insert(0, "@" + path)
    return sel


def flags(options: Dict[str, Any]) -> List[str]:
    """Keywords as the binary's flags: ``program=2731, suffix=["cal", "i2d"]`` ->
    ``--program 2731 --suffix cal,i2d``; True is a bare flag, False and None leave it out;
    underscores become dashes (``s3_only=True`` -> ``--s3-only``)."""
    out: List[str] = []
    for name, value in options.items():
        if name in RESERVED:
            raise TypeError(f"{name}= is set by mastfetch's Python module itself")
        flag = "--" + name.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
            continue
        if isinstance(value, (list, tuple, set, frozenset)) or _is_sequence_like(value):
            parts = [str(_plain(v)) for v in value if _plain(v) is not None]
            if not parts:
                continue
            out += [flag, ",".join(parts)]
            continue
        out += [flag, os.fspath(value) if hasattr(value, "__fspath__") else str(value)]
    return out


def _is_sequence_like(value: Any) -> bool:
    # numpy arrays, astropy Columns, pandas Series: iterable, not text.
    return (
        hasattr(value, "__iter__")
        and hasattr(value, "__len__")
        and not isinstance(value, (str, bytes, dict))
        and not hasattr(value, "__fspath__")
    )


def split_query(products: Any, options: Dict[str, Any]) -> Any:
    """A dict of query keywords given in place of products joins the keywords."""
    if isinstance(products, dict):
        for name, value in products.items():
            options.setdefault(str(name), value)
        return None
    return products


def selection(products: Any, workdir: str) -> Selection:
    """Whatever ``products`` is, as arguments for ``plan``/``get``."""
    if products is None:
        return Selection()
    if is_table(products):
        return table_to_csv(products, os.path.join(workdir, "items.csv"))
    if isinstance(products, (str, os.PathLike)):
        products = [os.fspath(products)]
    if isinstance(products, Sequence) or _is_sequence_like(products):
        return items_to_file(products, os.path.join(workdir, "items.txt"))
    raise TypeError(
        "products must be an astropy Table or pandas DataFrame of products, a list of "
        f"selection items, or None with query keywords; got {type(products).__name__}"
    )
