"""mastfetch from Python: bulk, resumable, verified downloads of MAST data products.

Search with astroquery, download with mastfetch::

    from astroquery.mast import Observations
    import mastfetch

    obs = Observations.query_criteria(proposal_id=2731, instrument_name="NIRCAM/IMAGE")
    products = Observations.filter_products(Observations.get_product_list(obs),
                                            productSubGroupDescription="CAL")
    manifest = mastfetch.download(products, dest="data")
    # data/mastDownload/JWST/<obs_id>/<file>, as Observations.download_products lays it out

This module only converts: it hands the table to the bundled ``mastfetch`` binary as a CSV
file, reads back the binary's ``--json`` events and manifest, and returns astropy Tables. The
binary decides everything else (sources, checksums, resumption, exit codes).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from typing import Any, Dict, List, Optional

from . import _binary, _inputs, _results
from ._binary import find_binary

__all__ = [
    "download",
    "plan",
    "verify",
    "find_binary",
    "MastfetchError",
    "MastfetchWarning",
]

try:
    from importlib.metadata import PackageNotFoundError, version as _version

    try:
        __version__ = _version("mastfetch")
    except PackageNotFoundError:
        __version__ = "0+unknown"
except ImportError:  # pragma: no cover
    __version__ = "0+unknown"

log = logging.getLogger("mastfetch")

LAYOUTS = ("nested", "flat", "mirror")
# astroquery puts nested downloads under this folder of the download directory.
ASTROQUERY_FOLDER = "mastDownload"


class MastfetchError(RuntimeError):
    """The binary stopped with exit code 2 (usage, configuration or a fatal error), or died.

    ``message`` is the binary's own error (its last ``mastfetch: error:`` line), ``stderr`` all it
    printed, ``returncode`` its exit code. None of them holds the MAST token.
    """

    def __init__(self, message: str, *, returncode: int, stderr: str, args: List[str]):
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.stderr = stderr
        self.command = args


class MastfetchWarning(UserWarning):
    """Exit code 1: some files failed, were excluded or did not verify; the rest is done."""


def _scrub(text: str, token: Optional[str]) -> str:
    """The binary never prints the token; this makes sure nothing the module raises does."""
    for secret in (token, os.environ.get("MAST_API_TOKEN")):
        if secret and secret.strip() and len(secret.strip()) >= 4:
            text = text.replace(secret.strip(), "<redacted>")
    return text


def _error_lines(stderr: str) -> List[str]:
    return [
        line[len("mastfetch: error: ") :]
        for line in stderr.splitlines()
        if line.startswith("mastfetch: error: ")
    ]


def _raise_unless_done(run: "_binary.Finished", args: List[str], token: Optional[str]) -> None:
    if run.returncode in (0, 1):
        return
    stderr = _scrub(run.stderr, token)
    errors = _error_lines(stderr)
    if errors:
        message = errors[-1]
    elif run.returncode < 0:
        message = f"mastfetch was stopped by signal {-run.returncode}"
    else:
        tail = stderr.strip().splitlines()
        message = tail[-1] if tail else f"mastfetch exited with code {run.returncode}"
    raise MastfetchError(message, returncode=run.returncode, stderr=stderr, args=args)


def _warn(what: str, stderr: str, token: Optional[str]) -> None:
    errors = _error_lines(_scrub(stderr, token))
    detail = "; ".join(errors[:5])
    if len(errors) > 5:
        detail += f"; and {len(errors) - 5} more"
    warnings.warn(MastfetchWarning(what + (f": {detail}" if detail else "")), stacklevel=3)


class _Progress:
    """A tqdm bar (``tqdm.auto``: the widget in notebooks) fed by the binary's JSON events."""

    def __init__(self, enabled: bool, echo: bool):
        self.bar = None
        self.echo = echo
        self.events: List[Dict[str, Any]] = []
        self.files_total = 0
        self.files_done = 0
        self.bytes_from_files = 0
        self.tqdm = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.tqdm = tqdm
            except ImportError:
                self.tqdm = None

    def on_stdout(self, line: str) -> None:
        for event in _results.json_lines([line]):
            self.events.append(event)
            self._update(event)

    def on_stderr(self, line: str) -> None:
        if not self.echo:
            return
        if self.bar is not None and self.tqdm is not None:
            self.tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def _update(self, event: Dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "plan" and self.tqdm is not None:
            self.files_total = int(event.get("files") or 0)
            self.bar = self.tqdm(
                total=int(event.get("bytes") or 0) or None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="mastfetch",
                dynamic_ncols=True,
            )
        elif kind == "file":
            self.files_done += 1
            if event.get("status") in ("ok", "skipped", "adopted"):
                self.bytes_from_files += int(event.get("bytes") or 0)
            self._move(self.bytes_from_files)
        elif kind == "progress":
            self.files_total = int(event.get("files_total") or self.files_total)
            self._move(int(event.get("bytes_done") or 0))
        elif kind == "summary" and self.bar is not None:
            # Resumed files report only what this run transferred: a clean finish is whole.
            if not event.get("failed") and not event.get("excluded"):
                self._move(int(self.bar.total or self.bar.n))

    def _move(self, done: int) -> None:
        if self.bar is None:
            return
        done = max(done, int(self.bar.n))
        if self.bar.total:
            done = min(done, int(self.bar.total))
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(f"{self.files_done}/{self.files_total} files", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _common_flags(options: Dict[str, Any], *, layout: Optional[str], jobs: Optional[int]) -> List[str]:
    flags: List[str] = []
    if layout is not None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}: one of {', '.join(LAYOUTS)}")
        flags += ["--layout", layout]
    if jobs is not None:
        flags += ["--jobs", str(int(jobs))]
    return flags + _inputs.flags(options)


def _folder(dest: Any, layout: str) -> str:
    """The binary's DIR: astroquery's ``mastDownload`` folder for the nested layout; a bucket
    destination (``s3://BUCKET/PREFIX/``, copied server-side) as given."""
    dest = os.fspath(dest)
    if str(dest).startswith("s3://"):
        return dest
    return os.path.join(dest, ASTROQUERY_FOLDER) if layout == "nested" else dest


def _located(run: Any, folder: str, field: str):
    """The binary's JSON lines as a table, ``Local Path`` (``folder`` joined with ``field``)
    first."""
    rows = []
    for line in _results.json_lines(run.stdout_lines):
        row = {"Local Path": _results.local_path(folder, line.get(field))}
        row.update(line)
        rows.append(row)
    return _results.to_table(rows, first=("Local Path",))


def download(
    products: Any = None,
    dest: Any = ".",
    *,
    layout: str = "nested",
    token: Optional[str] = None,
    sha256: bool = False,
    jobs: Optional[int] = None,
    progress: bool = True,
    **options: Any,
):
    """Fetch products into ``dest``; return one row per file (an astropy Table).

    ``products``: an astropy Table or pandas DataFrame of products (``get_product_list`` /
    ``filter_products`` output: a ``dataURI``, ``productFilename`` or ``Filename`` column; rows
    repeated across observations are fetched once, under the row astroquery keeps: the first),
    a list of selection items (``mast:`` URIs, file names, ``s3://`` prefixes, ``@FILE``), or
    None with query keywords (``program=2731, suffix=["cal"]``).

    ``layout="nested"`` puts files where ``Observations.download_products`` does:
    ``dest/mastDownload/<obs_collection>/<obs_id>/<file>`` (the manifest goes into
    ``dest/mastDownload``); ``"flat"``: ``dest/<file>``; ``"mirror"``: ``dest/<s3 key>``.
    ``dest="s3://BUCKET/PREFIX/"`` copies into your own bucket server-side (``mastfetch get
    --dest s3://...``; pass ``layout="mirror"`` for the archive's keys); ``Local Path`` is then
    the object's ``s3://`` URL.

    ``token``: the MAST API token for exclusive-access files (default: ``$MAST_API_TOKEN``);
    handed to the binary in its environment only, never asked for. ``**options``: any flag of
    ``mastfetch get`` (``s3_only=True``, ``endpoint_url=...``, ``retries=3``, ...).

    Returns astroquery's manifest columns (``Local Path``, ``Status`` COMPLETE/SKIPPED/ERROR,
    ``Message``, ``URL``) then the mastfetch manifest's fields (``uri``, ``path``, ``source``,
    ``size``, ``sha256``, ``etag``, ``status``, ...). Exit code 1 (some files failed or were
    excluded) warns (``MastfetchWarning``) and returns the table with those rows; exit code 2
    raises ``MastfetchError``.
    """
    folder = _folder(dest, layout)
    products = _inputs.split_query(products, options)
    with tempfile.TemporaryDirectory(prefix="mastfetch-") as work:
        sel = _inputs.selection(products, work)
        if sel.duplicates_removed:
            log.info(
                "%d of %d products were duplicates; fetching %d unique products",
                sel.duplicates_removed,
                sel.duplicates_removed + len(sel.rows),
                len(sel.rows),
            )
        args = ["get", *sel.args, "--dest", folder, "--json", "--no-progress"]
        args += _common_flags(options, layout=layout, jobs=jobs)
        if sha256:
            args.append("--sha256")
        bar = _Progress(progress, echo=progress)
        try:
            run = _binary.run(args, token=token, on_stdout=bar.on_stdout, on_stderr=bar.on_stderr)
        finally:
            bar.close()
        _raise_unless_done(run, args, token)
        problems = _error_lines(_scrub(run.stderr, token))
        rows = _results.download_rows(folder, bar.events, sel.rows, problems, sel.csv_path)
    table = _results.to_table(rows, first=_results.ASTROQUERY_COLUMNS)
    if run.returncode == 1:
        bad = sum(1 for s in table["Status"] if s != "COMPLETE") if len(table) else 0
        _warn(f"mastfetch: {bad} of {len(table)} files not downloaded", run.stderr, token)
    return table


def plan(products_or_query: Any = None, *, dest: Any = ".", layout: str = "nested", **options: Any):
    """What ``download`` would fetch, without fetching: one row per planned file (``uri``,
    ``filename``, ``source`` s3/mast, ``bucket``, ``key``, ``url``, ``size``, ``etag``,
    ``access``, ``dest``), with ``Local Path`` where ``download(..., dest, layout)`` would put it.
    Takes the same products and keywords as ``download`` (the keywords may also come as a dict:
    ``plan({"program": 2731, "suffix": ["cal"]})``). Exit code 1 (items that cannot be
    planned) warns; 2 raises."""
    folder = _folder(dest, layout)
    token = options.pop("token", None)
    jobs = options.pop("jobs", None)
    products_or_query = _inputs.split_query(products_or_query, options)
    with tempfile.TemporaryDirectory(prefix="mastfetch-") as work:
        sel = _inputs.selection(products_or_query, work)
        args = ["plan", *sel.args, "--format", "jsonl"]
        args += _common_flags(options, layout=layout, jobs=jobs)
        run = _binary.run(args, token=token)
    _raise_unless_done(run, args, token)
    table = _located(run, folder, "dest")
    if run.returncode == 1:
        _warn("mastfetch: some items could not be planned", run.stderr, token)
    return table


def verify(dest: Any = ".", remote: bool = False, **options: Any):
    """Check a mirror against its manifest (and with ``remote=True`` against the archive):
    one row per file with ``Local Path``, ``path``, ``status`` (ok, missing, corrupt, stale)
    and ``message``. ``dest`` is what was given to ``download``: its ``mastDownload`` folder is
    checked when the manifest is there. Exit code 1 (files that do not verify) warns; 2 raises
    (e.g. no manifest)."""
    folder = os.fspath(dest)
    nested = os.path.join(folder, ASTROQUERY_FOLDER)
    if not _results.read_manifests(folder) and os.path.isdir(nested):
        folder = nested
    args = ["verify", folder, "--format", "jsonl"]
    if remote:
        args.append("--remote")
    args += _inputs.flags(options)
    run = _binary.run(args)
    _raise_unless_done(run, args, None)
    table = _located(run, folder, "path")
    if run.returncode == 1:
        bad = sum(1 for s in table["status"] if s != "ok") if len(table) else 0
        _warn(f"mastfetch verify: {bad} of {len(table)} files did not verify", run.stderr, None)
    return table
