"""Who a connection counts against: a local user by uid however many loopback addresses they use
(the kernel tells the owner of the client's socket), a remote IPv6 host by its /64."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess

import pytest
from support import as_unprivileged_user, require_sock_diag, unavailable

from spamfilter.service import peers as peers_module
from spamfilter.service.limits import Slots
from spamfilter.service.peers import local_owner, peer_key


@pytest.fixture
def kernel_answers() -> None:
    require_sock_diag()


def accepted_from(server: socket.socket, source: str) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(server.getsockname()[:2], timeout=10, source_address=(source, 0))
    conn, _ = server.accept()
    return client, conn


@pytest.mark.usefixtures("kernel_answers")
def test_loopback_addresses_of_one_user_are_one_peer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        ends = [accepted_from(server, f"127.0.0.{last}") for last in (1, 2, 77)]
        try:
            keys = {peer_key(conn.getpeername(), conn) for _, conn in ends}
        finally:
            for pair in ends:
                for sock in pair:
                    sock.close()
    assert keys == {f"uid {os.getuid()}"}


@pytest.mark.usefixtures("kernel_answers")
def test_a_dual_stack_listener_sees_the_same_user() -> None:
    if not socket.has_dualstack_ipv6():
        unavailable("no dual-stack IPv6 here")
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as server:
        client = socket.create_connection(("127.0.0.1", server.getsockname()[1]), timeout=10)
        conn, peer = server.accept()
        with client, conn:
            assert peer[0].startswith("::ffff:127.")
            assert peer_key(peer, conn) == f"uid {os.getuid()}"


@pytest.mark.usefixtures("kernel_answers")
def test_another_local_user_is_another_peer() -> None:
    if os.geteuid() != 0:
        unavailable("needs root to connect as another local user")
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        probe = f"import socket; s = socket.create_connection(('127.0.0.1', {port})); s.recv(1)"
        client = subprocess.Popen([*as_unprivileged_user(), python, "-c", probe])
        conn, peer = server.accept()
        with conn:
            try:
                key = peer_key(peer, conn)
                server_side = local_owner(conn.getsockname(), peer)  # the server's end: root's
            finally:
                conn.sendall(b"x")
                client.wait(timeout=30)
    assert key == "uid 65534" and server_side == 0


def test_a_closed_connection_falls_back_to_one_loopback_peer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client, conn = accepted_from(server, "127.0.0.9")
        peer, local = conn.getpeername(), conn.getsockname()
        client.close()
        conn.close()
    # Both ends gone: the kernel knows no such socket, and the key does not name an address.
    assert local_owner(peer, local) is None
    assert peer_key(peer, None) == "loopback"


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
    ],
)
def test_remote_peers(address: str, key: str) -> None:
    assert peer_key((address, 25), None) == key


@pytest.mark.usefixtures("kernel_answers")
def test_a_local_user_on_the_hosts_own_address_is_still_that_user() -> None:
    """A local client of the host's non-loopback address (spamc -d <the host's IP>) is asked of the
    kernel too: keyed by address, it escaped its uid's share and the per-user TELL rule."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route's source address
            own = probe.getsockname()[0]
        except OSError:
            own = "127.0.0.1"
    if own.startswith("127."):  # a host with no network at all: the unit test below still runs
        pytest.skip("this host has no non-loopback IPv4 address")
    with socket.create_server((own, 0)) as server:
        client, conn = accepted_from(server, own)
        with client, conn:
            assert peer_key(conn.getpeername(), conn) == f"uid {os.getuid()}"


def test_a_remote_address_is_asked_of_the_kernel_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same rule where the host has no second address to test with: the kernel's answer, not
    the address's kind, decides (a stand-in for the kernel, which names no owner for a socket of
    another host)."""
    asked: list[object] = []

    def owner(peer: object, local: object) -> int | None:
        asked.append(peer)
        return 1000 if peer == ("192.0.2.7", 40000) else None

    monkeypatch.setattr(peers_module, "local_owner", owner)
    assert peer_key(("192.0.2.7", 40000), None) == "uid 1000"  # a local user on the host's address
    assert peer_key(("192.0.2.8", 40000), None) == "192.0.2.8"  # another host
    assert len(asked) == 2


def test_one_peer_waits_in_at_most_its_share_of_the_waiting_places() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        slots = Slots(total=2, per_peer=1, waiters=4)
        assert slots.try_acquire("a")
        first = asyncio.ensure_future(slots.acquire("a", 5))  # waits for a's own slot
        await asyncio.sleep(0)
        second = await slots.acquire("a", 5)  # a already waits in its one place: refused at once
        other = await slots.acquire("b", 5)  # b is under its share: a free slot at once
        slots.release("a")
        return await first, second, other

    assert asyncio.run(scenario()) == (True, False, True)
