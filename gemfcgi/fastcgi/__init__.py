"""
The FastCGI side of gemfcgi.

``records`` (the pure codec), ``reply`` (what a reply's first bytes mean)
and ``params`` (what an application is told) do no I/O; ``client`` is the
per-request protocol and relay, ``backends`` opens every kind of backend
the same way, and ``spawn`` supervises the applications gemfcgi starts.
"""

from gemfcgi.fastcgi.backends import Backend, FastCGIBackends, open_backend
from gemfcgi.fastcgi.client import FastCGITimeouts
from gemfcgi.fastcgi.spawn import SpawnedApp

__all__ = ["Backend", "FastCGIBackends", "FastCGITimeouts", "SpawnedApp", "open_backend"]
