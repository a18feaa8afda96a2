"""The Python package against the local S3 server and MAST stand-in: the installed module runs
the installed binary, the way a notebook would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import mastfetch
from mastfetch import _inputs

from conftest import (CAL1, CAL2, CAT, EAP, GONE, GS, I2D, O_EAP, O_EXP1, OBS, O_L3, PRODUCT_ROWS,
                      RATE1, SIZES, TOKEN, product_table, uri)

OWN_FILES = ("mastfetch-manifest", "SHA256SUMS", ".mastfetch")

# Where astroquery's download_products puts each product of PRODUCT_ROWS: under the obs_id of
# the first row of its dataURI (the level-3 mosaic's, for the two cal files it lists first).
EXPECTED = {
    CAL1: OBS[O_L3],
    CAL2: OBS[O_L3],
    I2D: OBS[O_L3],
    CAT: OBS[O_L3],
    RATE1: OBS[O_EXP1],
    GS: OBS[O_EXP1],
}


def data_files(folder: Path):
    """Files under folder, relative, without mastfetch's own bookkeeping."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not any(part.startswith(OWN_FILES) for part in rel.split("/")):
            out.append(rel)
    return sorted(out)


def astroquery_path(dest: Path, name: str) -> str:
    return str(dest / "mastDownload" / "JWST" / EXPECTED[name] / name)


def test_table_fetches_each_product_once_where_astroquery_puts_it(tmp_path):
    table = product_table()
    assert len(table) == 9 and len(set(table["dataURI"])) == 6

    result = mastfetch.download(table, dest=tmp_path, progress=False)

    assert list(result.colnames[:4]) == ["Local Path", "Status", "Message", "URL"]
    for col in ("uri", "path", "source", "size", "checksum", "verified", "crc64nvme", "status"):
        assert col in result.colnames
    # One row per product, in table order, like astroquery's manifest.
    order = list(dict.fromkeys(name for _, name in PRODUCT_ROWS))
    assert list(result["uri"]) == [uri(n) for n in order]
    assert list(result["Local Path"]) == [astroquery_path(tmp_path, n) for n in order]
    assert set(result["Status"]) == {"COMPLETE"}
    assert all(m is None for m in result["Message"]) and all(u is None for u in result["URL"])
    assert set(result["source"]) == {"s3"}
    # Each product fetched once: one file, one manifest line, nothing under the other obs_id.
    folder = tmp_path / "mastDownload"
    assert data_files(folder) == sorted(f"JWST/{EXPECTED[n]}/{n}" for n in order)
    for n in order:
        assert os.path.getsize(astroquery_path(tmp_path, n)) == SIZES[n]
    manifest = [json.loads(l) for l in (folder / "mastfetch-manifest.jsonl").read_text().splitlines()]
    assert sorted(m["uri"] for m in manifest) == sorted(uri(n) for n in order)

    # A rerun transfers nothing and still says COMPLETE (status "skipped" in mastfetch's terms).
    again = mastfetch.download(table, dest=tmp_path, progress=False)
    assert set(again["Status"]) == {"COMPLETE"} and set(again["status"]) == {"skipped"}
    # SHA-256 is opt-in, as on the command line: then a column and a SHA256SUMS.
    assert "sha256" not in result.colnames
    summed = mastfetch.download(table, dest=tmp_path, sha256=True, progress=False)
    assert all(len(h) == 64 for h in summed["sha256"])
    assert (folder / "SHA256SUMS").exists()


def test_dedup_keeps_the_row_astroquery_keeps(tmp_path):
    # astroquery: np.unique(products["dataURI"], return_index=True), kept in table order.
    table = product_table()
    _, first = np.unique(table["dataURI"], return_index=True)
    kept = table[np.sort(first)]
    sel = _inputs.table_to_csv(table, str(tmp_path / "items.csv"))
    assert [r["dataURI"] for r in sel.rows] == list(kept["dataURI"])
    assert [r["obs_id"] for r in sel.rows] == list(kept["obs_id"])
    assert sel.duplicates_removed == 3


def test_pandas_dataframe(tmp_path):
    df = product_table().to_pandas()
    result = mastfetch.download(df, dest=tmp_path, progress=False)
    assert set(result["Status"]) == {"COMPLETE"}
    assert sorted(result["Local Path"]) == sorted(astroquery_path(tmp_path, n) for n in EXPECTED)


def test_flat_layout_and_items_list(tmp_path):
    result = mastfetch.download([uri(CAL1), RATE1], dest=tmp_path, layout="flat", progress=False)
    assert sorted(result["Local Path"]) == sorted(str(tmp_path / n) for n in (CAL1, RATE1))
    assert data_files(tmp_path) == sorted([CAL1, RATE1])


def test_query_keywords(tmp_path):
    result = mastfetch.download(program=2731, suffix=["cal"], calib_level=[2], dest=tmp_path,
                                progress=False)
    # MAST's rows, guide stars left out as the CLI does; each cal file once, under its own
    # observation (the query's product rows come per observation of the query).
    names = sorted(Path(p).name for p in result["Local Path"])
    assert names == sorted([CAL1, CAL2])
    assert set(result["Status"]) == {"COMPLETE"}
    for p in result["Local Path"]:
        assert Path(p).is_file() and Path(p).parent.parent.name == "JWST"


def test_flags_from_keywords():
    assert _inputs.flags({"program": 2731, "suffix": ["cal", "i2d"], "calib_level": (2, 3),
                          "s3_only": True, "include_guidestars": False, "obs_id": None,
                          "match_": "nrcb1"}) == [
        "--program", "2731", "--suffix", "cal,i2d", "--calib-level", "2,3", "--s3-only",
        "--match", "nrcb1"]
    with pytest.raises(TypeError):
        _inputs.flags({"json": True})


def test_plan_of_a_query_as_a_dict(tmp_path):
    result = mastfetch.plan({"program": 2731, "suffix": ["cal"]}, dest=tmp_path, layout="flat")
    assert sorted(result["Local Path"]) == sorted(str(tmp_path / n) for n in (CAL1, CAL2))
    assert set(result["source"]) == {"s3"}


def test_plan_downloads_nothing(tmp_path):
    result = mastfetch.plan(product_table(), dest=tmp_path)
    assert len(result) == 6
    assert sorted(result["Local Path"]) == sorted(astroquery_path(tmp_path, n) for n in EXPECTED)
    assert set(result["source"]) == {"s3"}
    assert not (tmp_path / "mastDownload").exists()


def test_verify_finds_damage(tmp_path):
    mastfetch.download(product_table(), dest=tmp_path, progress=False)
    ok = mastfetch.verify(tmp_path)
    assert len(ok) == 6 and set(ok["status"]) == {"ok"}
    assert sorted(ok["Local Path"]) == sorted(astroquery_path(tmp_path, n) for n in EXPECTED)

    damaged = Path(astroquery_path(tmp_path, I2D))
    data = bytearray(damaged.read_bytes())
    data[100] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.warns(mastfetch.MastfetchWarning, match="did not verify"):
        bad = mastfetch.verify(tmp_path)
    status = dict(zip(bad["Local Path"], bad["status"]))
    assert status[str(damaged)] == "corrupt"
    assert sum(s == "ok" for s in bad["status"]) == 5


def test_exit_1_returns_the_failed_rows_and_warns(tmp_path):
    table = product_table(extra=[(O_EXP1, GONE)])
    with pytest.warns(mastfetch.MastfetchWarning, match="1 of 7 files not downloaded"):
        result = mastfetch.download(table, dest=tmp_path, progress=False)
    by_uri = {r["uri"]: r for r in result}
    gone = by_uri[uri(GONE)]
    assert gone["Status"] == "ERROR" and gone["status"] == "failed"
    assert gone["Message"] and gone["URL"]
    assert sum(s == "COMPLETE" for s in result["Status"]) == 6


def test_unplannable_row_is_an_error_row(tmp_path):
    table = product_table()
    table["dataURI"][2] = "http://not-a-mast-uri"
    with pytest.warns(mastfetch.MastfetchWarning):
        result = mastfetch.download(table, dest=tmp_path, progress=False)
    bad = [r for r in result if r["Status"] == "ERROR"]
    assert len(bad) == 1 and "not a MAST product URI" in bad[0]["Message"]


def test_exit_2_raises_with_the_binary_message(tmp_path):
    with pytest.raises(mastfetch.MastfetchError) as e:
        mastfetch.download(product_table(), dest=tmp_path, jobs=0, progress=False)
    assert e.value.returncode == 2
    assert "--jobs" in str(e.value)


def test_exclusive_access_without_token_is_skipped(tmp_path):
    table = product_table(rows=[(O_EAP, EAP), (O_EXP1, RATE1)])
    with pytest.warns(mastfetch.MastfetchWarning):
        result = mastfetch.download(table, dest=tmp_path, progress=False)
    status = dict(zip(result["uri"], result["Status"]))
    assert status == {uri(EAP): "SKIPPED", uri(RATE1): "COMPLETE"}


def test_token_never_leaks(tmp_path, capfd):
    table = product_table(rows=[(O_EAP, EAP), (O_EXP1, RATE1)])
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = mastfetch.download(table, dest=tmp_path, token=TOKEN, progress=True)
        seen += [str(w.message) for w in caught]
        status = dict(zip(result["uri"], result["source"]))
        assert status == {uri(EAP): "mast", uri(RATE1): "s3"}
        assert set(result["Status"]) == {"COMPLETE"}
        seen += [str(v) for row in result for v in row]
        seen += [str(v) for v in mastfetch.verify(tmp_path).as_array().tolist()]
        # A wrong token stops the run (exit 2): the message names the problem, not the token.
        (tmp_path / "again").mkdir()
        wrong = TOKEN[::-1]
        with pytest.raises(mastfetch.MastfetchError) as e:
            mastfetch.download(table, dest=tmp_path / "again", token=wrong, progress=True)
        seen += [str(e.value), e.value.stderr, " ".join(e.value.command)]
        seen += [str(w.message) for w in caught]
    out = capfd.readouterr()
    seen += [out.out, out.err]
    assert "mastfetch: plan:" in out.err  # progress=True shows the binary's own lines
    for f in tmp_path.rglob("*"):
        if f.is_file():
            seen.append(f.read_bytes().decode("utf-8", "replace"))
    assert seen
    for text in seen:
        assert TOKEN not in text and wrong not in text
    assert TOKEN not in os.environ.get("MAST_API_TOKEN", "")


def test_token_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MAST_API_TOKEN", TOKEN)
    result = mastfetch.download(product_table(rows=[(O_EAP, EAP)]), dest=tmp_path, progress=False)
    assert list(result["Status"]) == ["COMPLETE"]


def test_progress_bar_runs(tmp_path, capfd):
    pytest.importorskip("tqdm")
    result = mastfetch.download(product_table(), dest=tmp_path, progress=True)
    assert set(result["Status"]) == {"COMPLETE"}
    err = capfd.readouterr().err
    assert "mastfetch" in err and "6/6 files" in err


def test_binary_is_found_and_versions_match():
    binary = mastfetch.find_binary()
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == mastfetch.__version__


def test_binary_override_must_exist(monkeypatch):
    monkeypatch.setenv("MASTFETCH_BINARY", "/nonexistent/mastfetch")
    with pytest.raises(FileNotFoundError, match="MASTFETCH_BINARY"):
        mastfetch.find_binary()


def test_pandas_is_not_imported_for_other_inputs(servers):
    code = (
        "import sys, mastfetch\n"
        f"mastfetch.plan([{uri(CAL1)!r}])\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_bucket_destination_is_passed_as_given():
    from mastfetch import _folder, _results

    assert _folder("s3://mine/jwst/", "nested") == "s3://mine/jwst/"
    assert _folder("data", "nested").endswith("mastDownload")
    assert _results.local_path("s3://mine/jwst/", "jwst/public/x.fits") == (
        "s3://mine/jwst/jwst/public/x.fits"
    )
    assert _results.read_manifests("s3://mine/jwst/") == {}
