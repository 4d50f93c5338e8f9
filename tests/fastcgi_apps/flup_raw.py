"""flup's FastCGI server answering raw Gemini, bypassing its WSGI layer."""

from flup.server.fcgi import WSGIServer
from flup.server.fcgi_base import FCGI_REQUEST_COMPLETE


class GeminiServer(WSGIServer):
    def handler(self, req):
        path = req.params.get("PATH_INFO", "")
        req.stdout.write(b"20 text/gemini\r\n# flup raw\n" + f"path {path}\n".encode())
        return FCGI_REQUEST_COMPLETE, 0


if __name__ == "__main__":
    GeminiServer(None).run()
