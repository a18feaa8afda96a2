#!/usr/bin/env python3
"""Scale benchmark: mastfetch over plans and manifests of millions of rows, no server needed.

    scripts/bench --scale                 # 1M and 2M rows (5M with --rows 1000000,2000000,5000000)
    scripts/bench --scale --rows 200000   # a quick look

Writes synthetic JWST-shaped plans (sizes drawn from the mix of a real program: many small
files, fewer large ones) under .bench/scale and runs, with /usr/bin/time for wall time and peak
RSS: one shard of 100 of a plan file (`plan @plan.jsonl --shards 100 --shard-index 3`), the
same shard through `get --dry-run`, and `verify` of a manifest of every row (files absent:
what is measured is reading the manifest, not hashing), a rerun of `get` over the whole plan
into a mirror whose manifest records every file complete (sparse files of the right sizes: the
skip pass is what is measured), and `plan` of a bucket prefix of as many listed keys (the
benchmark S3 server with synthetic listed-only objects). Prints a table and writes
bench/scale.md. Standard library only.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".bench" / "scale"


def sizes(n, seed=2731):
    """A JWST-like mix: 60% small (10-500 KiB), 30% medium (5-120 MiB), 10% large (0.3-2 GiB)."""
    rng = random.Random(seed)
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            yield rng.randint(10 << 10, 500 << 10)
        elif r < 0.9:
            yield rng.randint(5 << 20, 120 << 20)
        else:
            yield rng.randint(300 << 20, 2 << 30)


def row(i, size):
    obs = f"jw{1000 + i // 100000:05d}{(i // 1000) % 1000:03d}001_02101_{i % 1000:05d}_nrcb1"
    name = f"{obs}_{i:08d}_cal.fits"
    key = f"jwst/public/jw{1000 + i // 100000:05d}/{obs[:13]}/{name}"
    return {
        "uri": f"mast:JWST/product/{name}", "filename": name, "source": "s3",
        "bucket": "stpubdata", "key": key,
        "url": f"https://stpubdata.s3.us-east-1.amazonaws.com/{key}",
        "size": size, "etag": f"\"{i:032x}\"", "access": "PUBLIC",
        "dest": f"JWST/{obs}/{name}",
    }


def write_plan(n):
    path = WORK / f"plan-{n}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for i, s in enumerate(sizes(n)):
                f.write(json.dumps(row(i, s), separators=(",", ":")) + "\n")
        tmp.rename(path)
    return path


def write_manifest(n, kind="records"):
    """A folder whose manifest records every row complete: `records-N` holds only the
    manifest (verify reads records, finds files absent), `mirror-N` also gets the files."""
    d = WORK / f"{kind}-{n}"
    m = d / "mastfetch-manifest.jsonl"
    if not m.exists():
        d.mkdir(parents=True, exist_ok=True)
        tmp = m.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for i, s in enumerate(sizes(n)):
                r = row(i, s)
                e = {k: r[k] for k in ("uri", "source", "bucket", "key", "url", "size", "etag",
                                       "access")}
                # As a current run records a file: its CRC-64/NVME known, so a rerun that
                # skips it need not read it.
                e.update(path=r["dest"], status="ok", message=None, checksum=None,
                         verified="etag", crc64nvme="AAAAAAAAAAA=")
                f.write(json.dumps(e, separators=(",", ":")) + "\n")
        tmp.rename(m)
    return d


def write_files(n):
    """The mirror's files, sparse (right sizes, no blocks), so that `get` over the plan finds
    every file complete and the rerun measures its skip pass, not a download."""
    d = write_manifest(n, "mirror")
    done = d / ".files-written"
    if not done.exists():
        made = set()
        for i, s in enumerate(sizes(n)):
            path = d / row(i, s)["dest"]
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            with open(path, "wb") as f:
                f.truncate(s)
        done.touch()
    return d


def start_lister(n):
    """The benchmark S3 server listing `n` synthetic keys under stpubdata/jwst/public/."""
    root = WORK / "lister"
    (root / "stpubdata").mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([REPO / "target" / "release" / "examples" / "bench_s3", root,
                          "--synthetic", str(n)], stdout=subprocess.PIPE, text=True)
    endpoint = p.stdout.readline().strip().split("=", 1)[1]
    LISTERS.append(p)
    return p, endpoint


LISTERS = []


def measure(cmd):
    """Wall seconds and peak RSS (MiB) of one run, via GNU time."""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *map(str, cmd)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True,
                       env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"})
    wall = time.monotonic() - t0
    rss = int(p.stderr.strip().splitlines()[-1]) / 1024
    return wall, rss, p.returncode


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rows", default="1000000,2000000", help="comma list of row counts")
    ap.add_argument("--mastfetch", type=Path, default=REPO / "target" / "release" / "mastfetch")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--rerun-rows", default="1000000",
                    help="row counts for the get rerun and prefix planning steps (files on disk)")
    args = ap.parse_args(argv)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "mastfetch",
                        "--example", "bench_s3"], cwd=REPO, check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    mf = args.mastfetch
    results = []
    for n in [int(x) for x in args.rows.split(",")]:
        plan = write_plan(n)
        mb = plan.stat().st_size / 1e6
        t0 = time.monotonic()
        with open(plan, "rb") as f:
            while f.read(1 << 20):
                pass
        read = time.monotonic() - t0
        steps = [
            ("plan shard 3/100", [mf, "plan", f"@{plan}", "--shards", "100", "--shard-index",
                                  "3", "--format", "jsonl"]),
            ("get --dry-run shard 3/100", [mf, "get", f"@{plan}", "--shards", "100",
                                           "--shard-index", "3", "--dry-run", "--format", "jsonl",
                                           "--dest", WORK / "unused"]),
            ("verify manifest", [mf, "verify", write_manifest(n), "--format", "jsonl"]),
        ]
        if str(n) in args.rerun_rows.split(","):
            steps.append(("get rerun, all complete", [
                mf, "get", f"@{plan}", "--dest", write_files(n), "--no-progress",
                "--endpoint-url", "http://127.0.0.1:9"]))
            server = start_lister(n)
            steps.append(("plan prefix (listing)", [
                mf, "plan", "s3://stpubdata/jwst/public/", "--format", "jsonl",
                "--endpoint-url", server[1]]))
        for name, cmd in steps:
            wall, rss, code = measure(cmd)
            results.append((n, name, wall, rss, code, mb, read))
            print(f"{n:>9,} rows  {name:<28} {wall:7.2f} s  {rss:8.1f} MiB  exit {code}"
                  f"  (file {mb:,.0f} MB, read in {read:.2f} s)", flush=True)
    for p in LISTERS:
        p.kill()
    out = ["| rows | step | wall s | peak RSS MiB | exit |", "| ---: | --- | ---: | ---: | ---: |"]
    out += [f"| {n:,} | {name} | {wall:.2f} | {rss:.1f} | {code} |"
            for n, name, wall, rss, code, _, _ in results]
    (REPO / "bench" / "scale.md").write_text(
        "# Scale benchmark (scripts/bench --scale)\n\n" + "\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
