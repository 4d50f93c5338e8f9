"""
An example of gemfcgi inside a Twisted application: run it with

    twistd -n -y conf/gemfcgi.tac

It serves the directory named by GEMINI_ROOT (default: the current
directory) as GEMINI_HOST (default: localhost) with the certificate pair in
GEMINI_CERT and GEMINI_KEY, on the Twisted endpoint in GEMINI_LISTEN. Any
other service of the application (a web site, a bot) sits beside it in the
same process and reactor.
"""

import os

from twisted.application.service import Application

import gemfcgi
from gemfcgi.config import model

root = os.environ.get("GEMINI_ROOT", os.getcwd())
host = os.environ.get("GEMINI_HOST", "localhost")
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

application = Application("gemini")
gemini = gemfcgi.makeService(
    config, listen=[os.environ.get("GEMINI_LISTEN", "tcp:1965:interface=127.0.0.1")]
)
gemini.setServiceParent(application)
