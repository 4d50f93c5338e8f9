"""Independent Gemini clients against the real server."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from tests.certs import issue, write
from tests.support import start_server


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, timeout=30, **kwargs)


def installed(name: str, how: str) -> str:
    executable = shutil.which(name)
    if executable is None:
        pytest.fail(f"{name} is not installed ({how})")
    return executable


def home(tmp_path) -> dict:
    """A fresh home, so a client's trust store (TOFU) and settings start empty."""
    return {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "XDG_CONFIG_HOME": str(tmp_path / ".config"),
        "XDG_CACHE_HOME": str(tmp_path / ".cache"),
        "XDG_DATA_HOME": str(tmp_path / ".local" / "share"),
    }


def test_openssl_s_client_gets_the_index_and_a_close_notify(server):
    result = run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
         "-servername", "localhost", "-ign_eof"],
        input=f"gemini://localhost:{server.port}/\r\n".encode(),
    )
    out = result.stdout.decode("utf-8", "replace")
    assert "20 text/gemini\r\n# Home\n" in out
    assert "closed" in out.lower() or result.returncode == 0


def test_openssl_s_client_without_sni_is_served_by_url_host(server):
    result = run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
         "-noservername", "-quiet"],
        input=f"gemini://localhost:{server.port}/sub/\r\n".encode(),
    )
    assert result.stdout.startswith(b"20 text/gemini\r\n# Sub\n")


def test_gemcall_fetches_a_page(server):
    executable = installed("gemcall", "pip install gemcall")
    result = run([executable, "-s", "-u", f"gemini://localhost:{server.port}/sub/"])
    assert result.stdout == b"20 text/gemini\n# Sub\n"


def test_agunua_fetches_a_page(server, tmp_path):
    executable = installed("agunua", "pip install agunua")
    result = run(
        [executable, "--insecure", f"gemini://localhost:{server.port}/sub/"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == b"# Sub"


def test_av98_downloads_a_page(server, tmp_path):
    executable = installed("av98", "pip install AV-98")
    saved = tmp_path / "sub.gmi"
    result = run(
        [executable, "--dl", "-o", str(saved), f"gemini://localhost:{server.port}/sub/"],
        env=home(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert saved.read_bytes() == b"# Sub\n"


def test_av98_shows_the_index_follows_its_link_and_a_redirect(server, tmp_path):
    executable = installed("av98", "pip install AV-98")
    base = f"gemini://localhost:{server.port}"
    before = len(server.log)
    # av98 reads its commands from standard input: open the index, follow
    # its first link, then ask for the directory without its slash (a 31).
    result = run(
        [executable],
        input=f"go {base}/\n1\ngo {base}/sub\nquit\n".encode(),
        env={**home(tmp_path), "TERM": "dumb"},
    )
    screen = ANSI.sub("", result.stdout.decode("utf-8", "replace"))
    assert result.returncode == 0, screen
    assert re.search(r"Home\n\[1\] sub\n.*> +\r?Sub\n.*> +\r?Sub\n", screen, re.S), screen
    server.wait_for_log(r"GET gemini://localhost/sub 31 /sub/ ", since=before)


# Seconds a full-screen client's screen may lag before it is made to draw again.
NUDGE_AFTER = 4.0


class Tmux:
    """A terminal for a full-screen client: keys in, the screen's text out."""

    def __init__(self, tmp_path, env: dict) -> None:
        self.command = [installed("tmux", "apt-get install tmux"), "-S", str(tmp_path / "tmux")]
        self.env = env

    def start(self, *command: str) -> None:
        subprocess.run(
            [*self.command, "new-session", "-d", "-x", "100", "-y", "30", *command],
            env=self.env, check=True, timeout=10,
        )

    def screen(self) -> str:
        return subprocess.run(
            [*self.command, "capture-pane", "-p"],
            env=self.env, capture_output=True, text=True, timeout=10,
        ).stdout

    def wait_for(self, *texts: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        nudge_at = time.monotonic() + NUDGE_AFTER
        while True:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {texts!r} on the screen:\n{screen}")
            if time.monotonic() > nudge_at:
                # amfora now and then leaves its last frame undrawn (the page
                # shown, its status still "Loading...", the request logged
                # and closed long before) until something makes it draw: a
                # change of the window's size does, as a person's would.
                self.redraw()
                nudge_at = time.monotonic() + NUDGE_AFTER
            time.sleep(0.1)

    def redraw(self) -> None:
        for width in ("101", "100"):
            subprocess.run([*self.command, "resize-window", "-x", width], env=self.env,
                           capture_output=True, timeout=10)

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.command, "send-keys", *keys], env=self.env, check=True, timeout=10)

    def close(self) -> None:
        subprocess.run([*self.command, "kill-server"], env=self.env, capture_output=True, timeout=10)


def test_amfora_shows_the_index_and_follows_its_link(server, tmp_path):
    executable = installed("amfora", "apt-get install amfora")
    terminal = Tmux(tmp_path, {**home(tmp_path), "TERM": "xterm-256color"})
    base = f"gemini://localhost:{server.port}"
    before = len(server.log)
    terminal.start(executable, f"{base}/")
    try:
        # amfora trusts the self-signed certificate on first use (TOFU).
        terminal.wait_for("# Home", "[1]  sub", f"{base}/")
        # A page with fewer than ten links: its number alone follows one.
        terminal.keys("1")
        screen = terminal.wait_for("# Sub", f"{base}/sub/")
        assert "# Home" not in screen
        # amfora keeps each connection open after the response, until the
        # server's linger (2 s) cuts it. The access log still tells how long
        # each request took, not how long the client held on.
        for path in ("/", "/sub/"):
            line = server.wait_for_log(
                rf"GET gemini://localhost{re.escape(path)} 20 text/gemini \d+ ([\d.]+)ms", since=before
            )
            assert float(line.group(1)) < 2000.0, line.group(0)
        terminal.keys("q")
    finally:
        terminal.close()


@pytest.fixture
def embedded_default(tmp_path):
    """The server of README's first command: the demo capsule and its FastCGI app."""
    server = start_server(
        "--listen", "tcp:0:interface=127.0.0.1",
        env={"XDG_STATE_HOME": str(tmp_path / "state")},
    )
    yield server
    server.stop()


def test_av98_walks_the_demo_capsule_to_its_fastcgi_prompt(embedded_default, tmp_path):
    executable = installed("av98", "pip install AV-98")
    # The home page's fourth link is the FastCGI page; its first link asks
    # for a name (a 10), which av98 reads from its input like a person.
    result = run(
        [executable],
        input=(
            f"go gemini://localhost:{embedded_default.port}/\n4\n1\nAda Lovelace\nquit\n"
        ).encode(),
        env={**home(tmp_path), "TERM": "dumb"},
    )
    screen = ANSI.sub("", result.stdout.decode("utf-8", "replace"))
    assert result.returncode == 0, screen
    assert re.search(
        r"\[4\] A page made by a FastCGI application.*Hello, visitor!.*\[1\] Tell it your name"
        r".*What is your name\?.*Hello, Ada Lovelace!.*query: Ada%20Lovelace",
        screen, re.S,
    ), screen


def test_amfora_walks_the_demo_capsule_to_its_fastcgi_prompt(embedded_default, tmp_path):
    executable = installed("amfora", "apt-get install amfora")
    terminal = Tmux(tmp_path, {**home(tmp_path), "TERM": "xterm-256color"})
    base = f"gemini://localhost:{embedded_default.port}"
    terminal.start(executable, f"{base}/")
    try:
        terminal.wait_for("# gemfcgi", "[4]  A page made by a FastCGI application")
        # Fewer than ten links: a link's number alone follows it.
        terminal.keys("4")
        terminal.wait_for("# Hello, visitor!", "[1]  Tell it your name", f"{base}/app/hello")
        terminal.keys("1")
        # The 10 opens amfora's input box: type, move to Send, press it.
        terminal.wait_for("Input", "What is your name?")
        terminal.keys("-l", "Ada Lovelace")
        terminal.wait_for("Ada Lovelace")
        terminal.keys("Tab")
        terminal.keys("Enter")
        screen = terminal.wait_for("# Hello, Ada Lovelace!", f"{base}/app/ask?Ada%20Lovelace")
        assert "query: Ada%20Lovelace" in screen
        terminal.keys("q")
    except AssertionError as error:
        raise AssertionError(f"{error}\nserver log:\n{embedded_default.log}") from None
    finally:
        terminal.close()


MEMBERS = """
server "localhost" {{
    listen on 127.0.0.1 port 0
    cert "{cert}"
    key "{key}"
    root "{d}/root"
    location "/members/*" {{ require client ca "{d}/ca.pem" }}
}}
"""


@pytest.fixture(scope="module")
def members(tmp_path_factory, certificate):
    """A server whose /members/ needs a client certificate that its CA signed."""
    d = tmp_path_factory.mktemp("members")
    (d / "root" / "members").mkdir(parents=True)
    (d / "root" / "members" / "index.gmi").write_text("# members\n")
    ca = issue("members ca", ca=True)
    write(d, "ca", ca)
    member = write(d, "member", issue("member", ca))
    cert, key = certificate
    (d / "gmid.conf").write_text(MEMBERS.format(d=d, cert=cert, key=key))
    server = start_server("-c", str(d / "gmid.conf"))
    yield server, member
    server.stop()


def test_amfora_presents_its_client_certificate_and_is_let_in(members, tmp_path):
    executable = installed("amfora", "apt-get install amfora")
    server, (member_cert, member_key) = members
    config = tmp_path / ".config" / "amfora"
    config.mkdir(parents=True)
    # amfora's [auth] section: a certificate and key per host (and port).
    (config / "config.toml").write_text(
        f"[auth.certs]\n\"localhost:{server.port}\" = '{member_cert}'\n\n"
        f"[auth.keys]\n\"localhost:{server.port}\" = '{member_key}'\n"
    )
    terminal = Tmux(tmp_path, {**home(tmp_path), "TERM": "xterm-256color"})
    url = f"gemini://localhost:{server.port}/members/"
    before = len(server.log)
    terminal.start(executable, url)
    try:
        terminal.wait_for("# members", url)
    finally:
        terminal.close()
    server.wait_for_log(r"GET gemini://localhost/members/ 20 text/gemini", since=before)


def test_amfora_without_a_certificate_is_told_one_is_required(members, tmp_path):
    executable = installed("amfora", "apt-get install amfora")
    server, _ = members
    terminal = Tmux(tmp_path, {**home(tmp_path), "TERM": "xterm-256color"})
    url = f"gemini://localhost:{server.port}/members/"
    before = len(server.log)
    terminal.start(executable, url)
    try:
        screen = terminal.wait_for("Client Certificate Required")
    finally:
        terminal.close()
    assert "# members" not in screen
    server.wait_for_log(r"GET gemini://localhost/members/ 60 client certificate required", since=before)
