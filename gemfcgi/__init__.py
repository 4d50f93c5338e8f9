"""
gemfcgi: a Gemini server on Twisted whose dynamic pages come from FastCGI.

The public API for Twisted programs that embed it:

- ``makeService(config, listen=None, timeouts=None, reactor=None,
  max_connections=None, drain_timeout=30.0, fastcgi_timeouts=None)``
  returns an ``IService`` serving a ``Config`` (build one with
  ``gemfcgi.config.model``, or read a gmid.conf with
  ``gemfcgi.config.load_config``, which returns it with its warnings);
- ``build_site(config)`` gives a ``Site``, ``GeminiFactory(site)`` a
  protocol factory for any endpoint, to be wrapped in TLS by
  ``TLSMemoryBIOFactory`` with ``ServerTLS(build_certificates(config,
  site.routes))``.
"""

from gemfcgi._version import __version__
from gemfcgi.config import model
from gemfcgi.server import GeminiFactory, GeminiProtocol, Site, Timeouts
from gemfcgi.service import GemfcgiService, build_certificates, build_site, makeService
from gemfcgi.certificates import ClientCertificate
from gemfcgi.tls import ServerTLS

__all__ = [
    "__version__",
    "model",
    "makeService",
    "build_site",
    "build_certificates",
    "GemfcgiService",
    "GeminiFactory",
    "GeminiProtocol",
    "Site",
    "Timeouts",
    "ServerTLS",
    "ClientCertificate",
]
