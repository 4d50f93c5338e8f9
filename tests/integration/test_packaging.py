"""gemfcgi as pip installs it: the plugin ships without a twisted/__init__.py."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from tests.support import PROJECT_ROOT


def test_wheel_ships_the_plugins_and_the_demo_but_no_twisted_package(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "-q", "-w", str(tmp_path), str(PROJECT_ROOT)],
        capture_output=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    (wheel,) = tmp_path.glob("gemfcgi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/gemfcgi_plugin.py" in names
    assert "twisted/plugins/gemfcgi_endpoints.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert "gemfcgi/demo/capsule/index.gmi" in names
    assert "gemfcgi/demo/capsule/docs/hello.txt" in names


def test_installed_twistd_lists_gemfcgi_without_the_source_on_the_path(tmp_path):
    # The test command installs gemfcgi (editable); twistd must find the
    # plugin through that installation alone, from any directory.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
        capture_output=True, timeout=60, cwd=tmp_path, env=env,
    )
    assert b"gemfcgi" in result.stdout
