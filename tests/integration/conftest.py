"""Fixtures shared by the integration tests: capsules, certificates, servers."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from gemfcgi.certificates import make_self_signed, write_key_pair
from tests.support import start_server


@pytest.fixture(scope="session")
def world_readable_dir():
    """A directory every user can enter (pytest's own tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="gemfcgi-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def certificate(world_readable_dir):
    directory = world_readable_dir / "certs"
    cert_pem, key_pem = make_self_signed(["localhost", "127.0.0.1", "::1"])
    write_key_pair(directory / "cert.pem", directory / "key.pem", cert_pem, key_pem)
    return str(directory / "cert.pem"), str(directory / "key.pem")


@pytest.fixture(scope="session")
def capsule(world_readable_dir) -> Path:
    root = world_readable_dir / "capsule"
    root.mkdir()
    (root / "index.gmi").write_text("# Home\n=> sub/ sub\n")
    (root / "sub").mkdir()
    (root / "sub" / "index.gmi").write_text("# Sub\n")
    (root / "noindex").mkdir()
    (root / "noindex" / "file.txt").write_text("plain\n")
    (root / "UPPER.GMI").write_text("# upper\n")
    (root / "picture.PNG").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "data.bin").write_bytes(bytes(range(256)))
    (root / "readme.md").write_text("# md\n")
    (root / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "fifo")
    (root / "escape.txt").symlink_to("/etc/hostname")
    (root / "escape-dir").symlink_to("/etc")
    (root / "inside-link.gmi").symlink_to(root / "index.gmi")
    (root / "project").mkdir()
    (root / "project" / "README.md").write_text("# Project\n")
    (root / "project" / "index.gmi").symlink_to("README.md")
    (root / "notes.gmi").symlink_to("noindex/file.txt")
    secret = root / "secret.gmi"
    secret.write_text("# secret\n")
    secret.chmod(0)
    for directory, dirs, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            path = Path(directory, name)
            if path.is_symlink() or name in ("secret.gmi", "fifo"):
                continue
            path.chmod(0o644)
    big = root / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1024 * 1024 * 1024)
    big.chmod(0o644)
    return root


@pytest.fixture(scope="module")
def server(capsule, certificate, world_readable_dir):
    """gemfcgi in quick mode on the test capsule, running as nobody."""
    cert, key = certificate
    args = [
        "--root", str(capsule), "--hostname", "localhost",
        "--cert", cert, "--key", key,
        "--listen", "tcp:0:interface=127.0.0.1",
        "--request-timeout", "1", "--handshake-timeout", "1",
    ]
    twistd_args = []
    if os.getuid() == 0:
        uid, gid = _nobody()
        twistd_args = ["--uid", str(uid), "--gid", str(gid)]
    process = start_server(*args, twistd_args=twistd_args)
    yield process
    process.stop()


def _nobody() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def busy_port():
    """A loopback port that something else listens on for the whole test."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    yield busy.getsockname()[1]
    busy.close()
