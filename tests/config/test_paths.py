"""Relative roots, access files and FastCGI sockets are anchored where the server started."""

from __future__ import annotations

from gemfcgi.config import model
from gemfcgi.config.paths import anchor_paths


def config_with_relative_paths(**top) -> model.Config:
    socket = model.FastCGI(address=model.FastCGISocket("run/app.sock"))
    return model.Config(
        servers=[model.Server(
            name="localhost",
            options=model.LocationOptions(root="capsule"),
            locations=[
                model.Location("/app/*", model.LocationOptions(fastcgi=socket)),
                model.Location("/abs/*", model.LocationOptions(root="/srv/abs")),
            ],
        )],
        log=model.LogSettings(access="logs/access.log"),
        **top,
    )


def test_relative_paths_are_joined_to_the_starting_directory():
    config = anchor_paths(config_with_relative_paths(), "/home/capsule")
    server = config.servers[0]
    assert server.options.root == "/home/capsule/capsule"
    assert server.locations[0].options.fastcgi.address.path == "/home/capsule/run/app.sock"
    assert server.locations[1].options.root == "/srv/abs"
    assert config.log.access == "/home/capsule/logs/access.log"


def test_under_a_chroot_they_stay_relative_to_it():
    for top in ({"chroot": "/var/gemini"}, {"user": "gemini"}):
        config = anchor_paths(config_with_relative_paths(**top), "/home/capsule")
        assert config.servers[0].options.root == "capsule"
        assert config.log.access == "logs/access.log"
