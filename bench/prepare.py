"""
Everything before the first measurement: packages, peers, gembench, and the
private network namespace.

Installing needs the network, so it happens before the benchmark re-executes
itself inside ``unshare --net``, where only a loopback interface exists. In
there molly-brown, which always binds every interface, is reachable only
from the benchmark itself. A peer that cannot be had is reported as missing,
never a reason to fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bench import REPO

# What the full benchmark installs when it is missing (and it runs as root).
DEBIAN_PACKAGES = ["molly-brown", "iproute2", "util-linux", "build-essential", "libssl-dev", "fcgiwrap"]
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
INSTALL_TIMEOUT = 900


class PrepareFailed(Exception):
    pass


@dataclass
class Tools:
    """What this machine offers the benchmark."""

    jetforce: Optional[Path] = None
    molly_brown: Optional[str] = None
    fcgiwrap: Optional[str] = None
    plot_python: Optional[str] = None
    missing: dict[str, str] = field(default_factory=dict)  # name -> why
    versions: dict[str, str] = field(default_factory=dict)


def is_root() -> bool:
    return os.geteuid() == 0


def gembench_source(option: Optional[str]) -> Path:
    """``--gembench-src``, else $GEMBENCH_SRC, else shared/tools/gembench beside the checkout."""
    chosen = option or os.environ.get("GEMBENCH_SRC")
    return Path(chosen).resolve() if chosen else REPO.parent / "shared" / "tools" / "gembench"


def build_gembench(source: Path, work: Path) -> Path:
    """``make OUT=<work>``: the source folder may be read-only."""
    if not (source / "gembench.c").exists():
        raise PrepareFailed(f"gembench source not found in {source} (set GEMBENCH_SRC or --gembench-src)")
    work.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["make", "-s", "-C", str(source), f"OUT={work}"],
                          capture_output=True, text=True, timeout=300)
    binary = work / "gembench"
    if done.returncode != 0 or not binary.exists():
        raise PrepareFailed(
            f"building gembench failed (needs build-essential and libssl-dev):\n{done.stdout}{done.stderr}")
    return binary


def _debian_installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                          capture_output=True, text=True)
    return done.returncode == 0 and "install ok installed" in done.stdout


def install_debian_packages(log) -> None:
    """apt-get install whatever of DEBIAN_PACKAGES is missing (root only)."""
    if not (is_root() and shutil.which("apt-get")):
        return
    missing = [package for package in DEBIAN_PACKAGES if not _debian_installed(package)]
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=INSTALL_TIMEOUT)
    for package in missing:  # one at a time: one unavailable package must not block the others
        done = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
                              capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT)
        if done.returncode != 0:
            log(f"  apt-get install {package} failed: {done.stderr.strip()[-300:]}")


def _venv_with(directory: Path, package: str, log) -> Optional[Path]:
    """A virtual environment at ``directory`` with ``package`` pip-installed; its python."""
    python = directory / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True, timeout=300)
    log(f"pip install {package} into {directory}")
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", package],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if done.returncode != 0:
        log(f"  pip install {package} failed: {done.stderr.strip()[-300:]}")
        return None
    return python


def _has_matplotlib(python: str) -> bool:
    done = subprocess.run([python, "-c", "import matplotlib"], capture_output=True, timeout=120)
    return done.returncode == 0


def find_tools(work: Path, install: bool, log) -> Tools:
    """Peers and helpers, installing the missing ones when ``install``."""
    tools = Tools()
    if install:
        install_debian_packages(log)

    jetforce = work / "jetforce-venv" / "bin" / "jetforce"
    if not jetforce.exists() and install:
        _venv_with(work / "jetforce-venv", "jetforce", log)
    if jetforce.exists():
        tools.jetforce = jetforce
        tools.versions["jetforce"] = _output([str(jetforce), "--version"]).removeprefix("jetforce ")
    else:
        tools.missing["jetforce"] = ("not installed (the full benchmark pip-installs it into "
                                     f"{work / 'jetforce-venv'})")

    tools.molly_brown = shutil.which("molly-brown", path=SBIN_PATH)
    if tools.molly_brown:
        tools.versions["molly-brown"] = _output(["dpkg-query", "-W", "-f=${Version}", "molly-brown"])
    else:
        tools.missing["molly-brown"] = "not installed (Debian package molly-brown)"
    tools.fcgiwrap = shutil.which("fcgiwrap", path=SBIN_PATH)

    candidates = [sys.executable, str(work / "plot-venv" / "bin" / "python")]
    tools.plot_python = next((p for p in candidates if Path(p).exists() and _has_matplotlib(p)), None)
    if tools.plot_python is None and install:
        installed = _venv_with(work / "plot-venv", "matplotlib", log)
        tools.plot_python = str(installed) if installed else None
    return tools


def _output(argv: list[str]) -> str:
    """The last line a version command prints, or "?"."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[-1] if lines else "?"


def snapshot_code(work: Path) -> Path:
    """A copy of gemfcgi (and its twistd plugins) for the servers to run.

    Others commit while the benchmark runs, and a server started later in
    the run would import newer code than one started at the beginning; with
    a snapshot every server of a run runs the same code.
    """
    snapshot = work / "code"
    shutil.rmtree(snapshot, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
    shutil.copytree(REPO / "gemfcgi", snapshot / "gemfcgi", ignore=ignore)
    shutil.copytree(REPO / "twisted" / "plugins", snapshot / "twisted" / "plugins", ignore=ignore)
    return snapshot


def can_unshare() -> bool:
    return is_root() and bool(shutil.which("unshare")) and bool(shutil.which("ip", path=SBIN_PATH))


def reexecute_in_network_namespace(script: Path, argv: list[str]) -> None:
    """Replace this process with itself inside ``unshare --net`` (same PID, loopback only)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("unshare", ["unshare", "--net", "--", sys.executable, str(script), *argv, "--in-netns"])


def bring_loopback_up() -> None:
    ip = shutil.which("ip", path=SBIN_PATH) or "ip"
    subprocess.run([ip, "link", "set", "lo", "up"], check=True, timeout=30)
