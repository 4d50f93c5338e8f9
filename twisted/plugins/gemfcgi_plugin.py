"""The ``twistd gemfcgi`` plugin: it names the service maker and imports nothing heavy."""

from twisted.application.service import ServiceMaker

gemfcgi = ServiceMaker(
    "gemfcgi",
    "gemfcgi.tap",
    "A Gemini server whose dynamic pages come from FastCGI applications.",
    "gemfcgi",
)
