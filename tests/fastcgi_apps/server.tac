"""
A gemfcgi server with FastCGI locations, for the integration tests:

    GEMFCGI_TEST_SPEC='{...}' twistd -n -y tests/fastcgi_apps/server.tac

The JSON spec names the certificate pair, the listening endpoint, a static
root, shortened FastCGI timeouts and the locations, each with one backend
(``socket``, ``tcp`` [host, port], ``spawn`` or ``endpoint``) and optional
``params``, ``root`` and ``strip``.
"""

import json
import os

from twisted.application.service import Application
from twisted.internet import reactor

import gemfcgi
from gemfcgi.config import model
from gemfcgi.fastcgi.client import FastCGITimeouts
from gemfcgi.handlers.fastcgi import install_fastcgi

spec = json.loads(os.environ["GEMFCGI_TEST_SPEC"])


def address(backend: dict) -> model.FastCGIAddress:
    if "socket" in backend:
        return model.FastCGISocket(backend["socket"])
    if "tcp" in backend:
        host, port = backend["tcp"]
        return model.FastCGITCP(host, port)
    if "spawn" in backend:
        return model.FastCGISpawn(backend["spawn"])
    return model.FastCGIEndpoint(backend["endpoint"])


locations = [
    model.Location(
        pattern=location["pattern"],
        options=model.LocationOptions(
            root=location.get("root"),
            log=location.get("log"),
            fastcgi=model.FastCGI(
                address=address(location["backend"]),
                params=[tuple(pair) for pair in location.get("params", [])],
                strip=location.get("strip"),
            ),
        ),
    )
    for location in spec["locations"]
]
config = model.Config(
    servers=[
        model.Server(
            name="localhost",
            cert=spec["cert"],
            key=spec["key"],
            options=model.LocationOptions(root=spec.get("root")),
            locations=locations,
        )
    ]
)

application = Application("gemfcgi-fastcgi-tests")
gemini = gemfcgi.makeService(config, listen=[spec["listen"]])
if getattr(gemini, "fastcgi", None) is not None:
    # The tests need shorter timeouts than the service's own backends have.
    gemini.fastcgi.disownServiceParent()
# Added first so that it stops last: listeners close, then requests drain.
backends = install_fastcgi(gemini.site, config, reactor, FastCGITimeouts(**spec.get("timeouts", {})))
backends.setServiceParent(application)
gemini.setServiceParent(application)
