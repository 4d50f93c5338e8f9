"""Independent Gemini clients against the real server."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, timeout=30, **kwargs)


def test_openssl_s_client_gets_the_index_and_a_close_notify(server):
    result = run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
         "-servername", "localhost", "-ign_eof"],
        input=f"gemini://localhost:{server.port}/\r\n".encode(),
    )
    out = result.stdout.decode("utf-8", "replace")
    assert "20 text/gemini\r\n# Home\n" in out
    assert "closed" in out.lower() or result.returncode == 0


def test_openssl_s_client_without_sni_is_served_by_url_host(server):
    result = run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
         "-noservername", "-quiet"],
        input=f"gemini://localhost:{server.port}/sub/\r\n".encode(),
    )
    assert result.stdout.startswith(b"20 text/gemini\r\n# Sub\n")


def test_gemcall_fetches_a_page(server):
    executable = shutil.which("gemcall")
    if executable is None:
        pytest.fail("gemcall is not installed (pip install gemcall)")
    result = run([executable, "-s", "-u", f"gemini://localhost:{server.port}/sub/"])
    assert result.stdout == b"20 text/gemini\n# Sub\n"


def test_agunua_fetches_a_page(server, tmp_path):
    executable = shutil.which("agunua")
    if executable is None:
        pytest.fail("agunua is not installed (pip install agunua)")
    result = run(
        [executable, "--insecure", f"gemini://localhost:{server.port}/sub/"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == b"# Sub"
