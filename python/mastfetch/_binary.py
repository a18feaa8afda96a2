"""Where the mastfetch binary is, and how to run it without leaking the token or prompting.

The wheel built by maturin (``bindings = "bin"``) installs the binary into the environment's
scripts folder (``bin/`` of a virtualenv), next to the Python that imports this package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

ENV_BINARY = "MASTFETCH_BINARY"
_EXE = "mastfetch" + (sysconfig.get_config_var("EXE") or "")


def _candidates() -> List[str]:
    found = [os.path.join(os.path.dirname(sys.executable), _EXE)]
    found.append(os.path.join(sysconfig.get_path("scripts"), _EXE))
    try:
        user_scheme = sysconfig.get_preferred_scheme("user")  # Python 3.10+
    except AttributeError:
        user_scheme = "nt_user" if os.name == "nt" else "posix_user"
    try:
        found.append(os.path.join(sysconfig.get_path("scripts", user_scheme), _EXE))
    except KeyError:
        pass
    # `pip install --target DIR` puts scripts in DIR/bin beside the package.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found.append(os.path.join(package_root, "bin", _EXE))
    return found


def find_binary() -> str:
    """Path of the mastfetch binary this package runs.

    ``$MASTFETCH_BINARY`` wins (tests, a binary built with cargo); otherwise the one the wheel
    installed into this environment's scripts folder.
    """
    override = os.environ.get(ENV_BINARY)
    if override:
        if not os.path.isfile(override):
            raise FileNotFoundError(f"{ENV_BINARY}={override!r} is not a file")
        return override
    tried = _candidates()
    for path in tried:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "the mastfetch binary is not installed beside this Python (looked in "
        + ", ".join(dict.fromkeys(tried))
        + f"); reinstall with `pip install mastfetch`, or set {ENV_BINARY}"
    )


@dataclass
class Finished:
    """A finished run: exit code, the binary's stderr, and its stdout lines."""

    returncode: int
    stderr: str
    stdout_lines: List[str] = field(default_factory=list)


def run(
    args: List[str],
    *,
    token: Optional[str] = None,
    on_stdout: Optional[Callable[[str], None]] = None,
    on_stderr: Optional[Callable[[str], None]] = None,
) -> Finished:
    """Run the binary with ``args``; return its exit code and output.

    The token goes to the child only, as ``MAST_API_TOKEN`` in its environment: never on the
    command line (other users can read that), never printed or kept. Standard input is closed,
    so the binary never prompts (a notebook kernel has no terminal to answer it).
    ``on_stdout`` sees each stdout line as it arrives (the ``--json`` events); ``on_stderr``
    each stderr line. Interrupting (Ctrl-C, a notebook's stop button) stops the child too;
    a later run resumes what it left.
    """
    env: Dict[str, str] = dict(os.environ)
    if token is not None:
        env["MAST_API_TOKEN"] = token
    proc = subprocess.Popen(
        [find_binary(), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )
    err_lines: List[str] = []

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if on_stderr is not None:
                on_stderr(line.rstrip("\n"))

    reader = threading.Thread(target=drain_stderr, daemon=True)
    reader.start()
    out_lines: List[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out_lines.append(line)
            if on_stdout is not None:
                on_stdout(line)
        proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        reader.join(timeout=10)
    return Finished(proc.returncode, "".join(err_lines), out_lines)


def _stop(proc: "subprocess.Popen[str]") -> None:
    """Stop the child as Ctrl-C would (partial files stay resumable), then for good."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT if os.name != "nt" else signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
