"""
gemfcgi's benchmark: gemfcgi against jetforce and molly-brown, driven by gembench.

``bench/run`` (or ``python -m bench``) is the entry point; README.md beside
this file says what each scenario measures. Modules, one concern each:

- ``prepare``: installs peers and tools, builds gembench, the network namespace;
- ``processes``: starting and always stopping children, CPU and memory of a process tree;
- ``fixtures``: the certificate and the files every server serves;
- ``servers``: how gemfcgi and each peer is started;
- ``gembench``: running the load generator and reading its ``RESULT`` line;
- ``clients``: small Python clients (probe, idle connections, slow reader);
- ``scenarios``: what is measured, in which order;
- ``report``: medians, ratios, targets, RESULTS.md; ``plot`` draws results.png.
"""

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
