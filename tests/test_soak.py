"""The soak script's short mode, so that it cannot rot and leaks show up in CI."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.prepare import gembench_source

SOAK = Path(__file__).resolve().parent / "soak" / "run"


def test_two_minute_soak_serves_everything_and_leaks_nothing(tmp_path):
    if not (gembench_source(None) / "gembench.c").exists():
        pytest.skip(f"gembench source not found at {gembench_source(None)} (set GEMBENCH_SRC)")
    report = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "2", "--out", str(report)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    text = report.read_text()
    assert ": PASS." in text
    assert "Server crashed: no" in text
