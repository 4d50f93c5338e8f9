"""A WSGI application behind flup: it answers with CGI headers (Status, Content-Type)."""

import sys

from flup.server.fcgi import WSGIServer


def application(environ, start_response):
    if environ.get("PATH_INFO", "").endswith("/missing"):
        # flup sends this as STDERR once the reply is out.
        environ["wsgi.errors"].write("no record for this page\n")
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here"]
    if environ.get("PATH_INFO", "").endswith("/environ"):
        # Each CGI variable's name and length: what flup decoded.
        start_response("200 OK", [("Content-Type", "text/plain")])
        names = sorted(name for name, value in environ.items() if isinstance(value, str))
        return [f"{name} {len(environ[name])}\n".encode() for name in names]
    start_response("200 OK", [("Content-Type", "text/gemini")])
    query = environ.get("QUERY_STRING", "")
    return [b"# flup wsgi\n", f"query {query}\n".encode()]


if __name__ == "__main__":
    bind = sys.argv[1] if len(sys.argv) > 1 else None
    WSGIServer(application, bindAddress=bind).run()
