"""
An example of gemfcgi inside a Twisted application: run it with

    twistd -n -y conf/gemfcgi.tac

It serves the directory named by GEMINI_ROOT (default: the current
directory) as GEMINI_HOST (default: localhost) with the certificate pair in
GEMINI_CERT and GEMINI_KEY, on the Twisted endpoint in GEMINI_LISTEN. Any
other service of the application (a web site, a bot) sits beside it in the
same process and reactor.

The program owns its signals: gemfcgi installs no SIGHUP handler of its own
here, so this one makes a hangup read the certificate and key files again
(after a renewal) instead of ending the process.
"""

import os

from twisted.application.service import Application
from twisted.internet import reactor

import gemfcgi
from gemfcgi.config import model
from gemfcgi.reload import Reloader

root = os.environ.get("GEMINI_ROOT", os.getcwd())
host = os.environ.get("GEMINI_HOST", "localhost")
missing = [name for name in ("GEMINI_CERT", "GEMINI_KEY") if not os.environ.get(name)]
if missing:
    files = {"GEMINI_CERT": "certificate", "GEMINI_KEY": "key"}
    raise SystemExit(f"gemfcgi.tac: set {' and '.join(missing)} to the "
                     f"{' and '.join(files[name] for name in missing)} file"
                     f"{'s' if len(missing) > 1 else ''} (twistd gemfcgi --gencert writes a "
                     "self-signed pair)")


def load():
    """The configuration, and no warnings; the key pair is read when it is applied."""
    config = model.Config(
        servers=[
            model.Server(
                name=host,
                cert=os.environ["GEMINI_CERT"],
                key=os.environ["GEMINI_KEY"],
                options=model.LocationOptions(root=root),
            )
        ]
    )
    return config, []


application = Application("gemini")
gemini = gemfcgi.makeService(
    load()[0], listen=[os.environ.get("GEMINI_LISTEN", "tcp:1965:interface=127.0.0.1")]
)
gemini.setServiceParent(application)
Reloader("GEMINI_CERT and GEMINI_KEY", load, gemini.reload, reactor).setServiceParent(application)
