"""Fixtures: the local S3 server and MAST stand-in of the Rust integration tests, started as one
process (`examples/test_servers.rs`) from the catalog below, and a product table shaped like
astroquery's `Observations.get_product_list` output for it.

The servers' binary is `$MASTFETCH_TEST_SERVERS`, else `target/debug/examples/test_servers`
(which `cargo test` builds), else it is built here with cargo. Nothing reaches the internet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOKEN = "mtk-4c1e8b2f90d7-PYTHON-SECRET"
PROGRAM = "2731"

# Observations (obsid -> obs_id) of a program like the Carina ERO: two exposures, a level-3
# mosaic whose product list repeats its members, and an exclusive-access exposure of another
# program.
O_EXP1, O_EXP2, O_L3, O_EAP = 90001, 90002, 90003, 91001
OBS = {
    O_EXP1: "jw02731001001_02101_00001_nrcb1",
    O_EXP2: "jw02731001001_02101_00002_nrcb1",
    O_L3: "jw02731-o001_t017_nircam_clear-f090w",
    O_EAP: "jw02739001001_02101_00001_nrcb1",
}

CAL1 = "jw02731001001_02101_00001_nrcb1_cal.fits"
RATE1 = "jw02731001001_02101_00001_nrcb1_rate.fits"
CAL2 = "jw02731001001_02101_00002_nrcb1_cal.fits"
GS = "jw02731001001_gs-fg_2022166062113_cal.fits"
I2D = "jw02731-o001_t017_nircam_clear-f090w_i2d.fits"
CAT = "jw02731-o001_t017_nircam_clear-f090w_cat.ecsv"
EAP = "jw02739001001_02101_00001_nrcb1_cal.fits"
# Listed in a table, held by no server: MAST answers 404.
GONE = "jw02731001001_02101_00003_nrcb1_cal.fits"

SIZES = {CAL1: 5000, RATE1: 4000, CAL2: 5100, GS: 900, I2D: 12000, CAT: 700, EAP: 3000}


def uri(name: str) -> str:
    return f"mast:JWST/product/{name}"


def catalog() -> dict:
    def product(name, listed_under, **kw):
        return {"uri": uri(name), "listed_under": listed_under, "size": SIZES[name],
                "proposal_id": PROGRAM, **kw}

    return {
        "token": TOKEN,
        "observations": [
            {"obsid": o, "obs_id": OBS[o], "instrument_name": "NIRCAM/IMAGE",
             "proposal_id": "2739" if o == O_EAP else PROGRAM,
             "calib_level": 3 if o == O_L3 else 2}
            for o in OBS
        ],
        "products": [
            product(CAL1, [O_EXP1, O_L3], group="Minimum Recommended Products"),
            product(RATE1, [O_EXP1]),
            product(CAL2, [O_EXP2, O_L3], group="Minimum Recommended Products"),
            product(GS, [O_EXP1, O_EXP2], product_type="AUXILIARY", subgroup="GS-FG"),
            product(I2D, [O_L3], calib_level=3),
            product(CAT, [O_L3], calib_level=3, product_type="CATALOG"),
            product(EAP, [O_EAP], data_rights="EXCLUSIVE_ACCESS", proposal_id="2739"),
        ],
    }


# One row per (observation, product) as get_product_list returns them for [L3, EXP1, EXP2]:
# the level-3 observation first, so its members' first rows carry the mosaic's obs_id, and
# the guide-star file listed under both exposures.
PRODUCT_ROWS = [
    (O_L3, CAL1), (O_L3, CAL2), (O_L3, I2D), (O_L3, CAT),
    (O_EXP1, CAL1), (O_EXP1, RATE1), (O_EXP1, GS),
    (O_EXP2, CAL2), (O_EXP2, GS),
]


def product_table(rows=PRODUCT_ROWS, extra=()):
    """An astropy Table with get_product_list's columns and types (masked where MAST sends
    null)."""
    from astropy.table import MaskedColumn, Table

    records = []
    for obsid, name in list(rows) + list(extra):
        suffix = name.rsplit("_", 1)[1].split(".")[0].upper()
        records.append({
            "obsID": str(obsid),
            "obs_collection": "JWST",
            "dataproduct_type": "image",
            "obs_id": OBS[obsid],
            "description": f"{suffix} product",
            "type": "S",
            "dataURI": uri(name),
            "productType": "AUXILIARY" if "_gs-" in name else "SCIENCE",
            "productGroupDescription": "Minimum Recommended Products" if suffix in ("CAL", "I2D") else None,
            "productSubGroupDescription": "GS-FG" if "_gs-" in name else suffix,
            "productDocumentationURL": None,
            "project": "CALJWST",
            "prvversion": "1.16.1",
            "proposal_id": "2739" if obsid == O_EAP else PROGRAM,
            "productFilename": name,
            "size": SIZES.get(name, 1234),
            "parent_obsid": str(obsid),
            "dataRights": "EXCLUSIVE_ACCESS" if obsid == O_EAP else "PUBLIC",
            "calib_level": 3 if "-o0" in name else 2,
            "filters": "F090W",
        })
    table = Table()
    for col in records[0]:
        values = [r[col] for r in records]
        if any(v is None for v in values):
            table[col] = MaskedColumn(["" if v is None else v for v in values],
                                      mask=[v is None for v in values])
        else:
            table[col] = values
    return table


def _servers_binary() -> str:
    given = os.environ.get("MASTFETCH_TEST_SERVERS")
    if given:
        return given
    built = REPO / "target" / "debug" / "examples" / "test_servers"
    if not built.exists():
        cargo = shutil.which("cargo")
        if cargo is None:
            pytest.fail("the test servers are not built and cargo is not on PATH: "
                        "run `cargo build --example test_servers` or set MASTFETCH_TEST_SERVERS")
        subprocess.run([cargo, "build", "--locked", "--quiet", "--example", "test_servers"],
                       cwd=REPO, check=True)
    return str(built)


class Servers:
    def __init__(self, endpoint: str, mast_url: str):
        self.endpoint = endpoint
        self.mast_url = mast_url
        self.token = TOKEN


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    spec = tmp_path_factory.mktemp("catalog") / "catalog.json"
    spec.write_text(json.dumps(catalog()))
    proc = subprocess.Popen([_servers_binary(), str(spec)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    found = {}
    for line in proc.stdout:
        line = line.strip()
        if line == "ready":
            break
        key, _, value = line.partition("=")
        found[key] = value
    else:
        proc.wait()
        pytest.fail(f"test servers did not start (exit {proc.returncode})")
    yield Servers(found["endpoint"], found["mast_url"])
    proc.stdin.close()  # the servers stop when their stdin closes
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, servers):
    """Every run of the binary talks to the local servers only, with no token unless a test
    gives one."""
    for k in list(os.environ):
        if k.startswith("AWS_") or k.startswith("MAST"):
            if k != "MASTFETCH_BINARY":
                monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ENDPOINT_URL", servers.endpoint)
    monkeypatch.setenv("MASTFETCH_MAST_URL", servers.mast_url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield
