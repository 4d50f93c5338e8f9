"""
What every server serves: one certificate and one set of files.

All servers get the same ECDSA P-256 certificate (the key type changes the
handshake cost by a quarter) and byte-identical files, so a difference in the
figures is a difference in the servers. The 1 GiB file is sparse: it costs no
disk, and reading it costs no I/O, so the slow-reader scenario measures only
how the server buffers.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

INDEX_SIZE = 986
MiB = 1024 * 1024


@dataclass(frozen=True)
class Fixture:
    cert: Path
    key: Path
    root: Path  # the capsule: index.gmi, big.bin, huge.bin
    cgi: Path  # one-line CGI scripts for fcgiwrap
    big_size: int
    huge_size: int

    @property
    def huge(self) -> Path:
        return self.root / "huge.bin"


def _index_page(size: int) -> bytes:
    """A plausible Gemtext page of exactly ``size`` bytes."""
    lines = ["# A benchmark capsule", "", "Served alike by every server under test.", ""]
    lines += [f"=> /post-{n:03}.gmi Post number {n}, a link line like any other" for n in range(40)]
    text = ("\n".join(lines) + "\n").encode("ascii")
    if len(text) < size:
        raise ValueError("index template shorter than the wanted size")
    return text[: size - 1] + b"\n"


def _write_script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def make_fixture(directory: Path, big_size: int, huge_size: int) -> Fixture:
    """Write the certificate, the capsule and the CGI scripts under ``directory``."""
    from gemfcgi.certificates import make_self_signed

    directory.mkdir(parents=True, exist_ok=True)
    root, cgi = directory / "capsule", directory / "cgi"
    root.mkdir(exist_ok=True)
    cgi.mkdir(exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not (cert.exists() and key.exists()):
        cert_pem, key_pem = make_self_signed(["localhost", "127.0.0.1", "::1"])
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        key.chmod(0o600)
    (root / "index.gmi").write_bytes(_index_page(INDEX_SIZE))
    big = root / "big.bin"
    if not big.exists() or big.stat().st_size != big_size:
        # Random-looking but reproducible bytes: no compression anywhere can help.
        block = bytes((n * 131 + 17) % 251 for n in range(MiB))
        with open(big, "wb") as out:
            for offset in range(0, big_size, len(block)):
                out.write(block[: big_size - offset])
    huge = root / "huge.bin"
    with open(huge, "ab") as out:
        out.truncate(huge_size)
    _write_script(cgi / "hello.sh", r"printf '20 text/gemini\r\nhello\n'")
    _write_script(cgi / "huge.sh", rf"printf '20 application/octet-stream\r\n'; exec cat {huge}")
    os.chmod(directory, 0o755)
    return Fixture(cert, key, root, cgi, big_size, huge_size)
