"""Clients that stall mid-request cannot starve the server (gunicorn's worker class).

With sync workers each process served one connection at a time: two connections that sent half their
headers and stopped held both workers of `make run`, and /healthz went unanswered for up to the
120 s worker timeout. gthread workers serve each request in one of several threads per process.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from bigquery_backend.emulator import EmulatorProcess
from tests.support.servers import PortalServer, ServerEnvironment

# More stalled clients than `make run` has worker processes (2), fewer than it has threads.
STALLED_CLIENTS = 4


@pytest.fixture(scope="module")
def server(
    bigquery_emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PortalServer]:
    environment = ServerEnvironment(
        data_dir=tmp_path_factory.mktemp("slow-clients"),
        emulator_url=bigquery_emulator.url,
        project=bigquery_emulator.project,
    )
    portal = PortalServer(environment, workers=2).start()  # as scripts/run.sh starts it
    yield portal
    portal.stop()


@pytest.fixture
def stalled(server: PortalServer) -> Iterator[list[socket.socket]]:
    """Connections that sent half a request's headers and then nothing more."""
    sockets = []
    for _ in range(STALLED_CLIENTS):
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        sockets.append(client)
    yield sockets
    for client in sockets:
        client.close()


def test_it_answers_health_checks_while_clients_stall_mid_headers(
    server: PortalServer, stalled: list[socket.socket]
) -> None:
    answers = [requests.get(f"{server.url}/healthz", timeout=5).status_code for _ in range(4)]

    assert answers == [200] * 4


def test_it_answers_the_stalled_clients_once_they_finish(
    server: PortalServer, stalled: list[socket.socket]
) -> None:
    stalled[0].sendall(b"1\r\nConnection: close\r\n\r\n")

    assert stalled[0].recv(64).startswith(b"HTTP/1.1 200")
