"""The tests' port helper: two listeners in one config must never be given the same port."""

from __future__ import annotations

import socket

from tests.ports import free_port


def test_free_port_never_repeats_within_a_process():
    # Port 0 alone repeats within a few hundred calls on Linux (birthday odds over ~28k ports).
    ports = [free_port() for _ in range(400)]
    assert len(set(ports)) == len(ports)


def test_free_port_is_bindable_for_its_kind():
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", free_port(kind)))
