"""Endpoint string parsers of gemfcgi (``adopted:``), found by Twisted's plugin system."""

from gemfcgi.endpoints import AdoptedSocketParser

adopted = AdoptedSocketParser()
