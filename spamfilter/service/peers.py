"""Who is at the other end of a connection, for the limits that share the service out per peer and
for the TELL quota.

A remote peer is its address (IPv6: its /64, what one host is given). A local peer is the user
running the client: ``SO_PEERCRED`` over a unix socket, and over TCP (loopback, or any of the host's
own addresses) the owner of the client's socket, which the kernel tells by its address and port
(``sock_diag``, what ``ss -e`` shows). Any local user may bind any of the 16 million 127.x
addresses, so an address alone would let one user pass for thousands of peers; by uid, each local
user (the MTA's, spamc's) has one share.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import Any

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# sock_diag (linux/inet_diag.h): one TCP socket looked up by its two ends (no dump).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_ALL_STATES = 0xFFF
_NO_COOKIE = 0xFFFFFFFF
_UID_OFFSET = _NLMSG_HEADER.size + 4 + 48 + 12  # inet_diag_msg: 4 bytes, the socket id, 3 counters
_TCP_LISTEN = 10
PeerIdentity = tuple[str, "int | None"]  # peer_key's name, and the uid of a local peer


def peer_credentials(sock: Any) -> tuple[int, int] | None:
    """(uid, gid) of the process at the other end of a unix socket, or None (TCP, or unknown)."""
    if sock is None or getattr(sock, "family", None) != socket.AF_UNIX:
        return None
    try:
        _pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except (OSError, AttributeError, struct.error):
        return None
    return uid, gid


def peer_key(peer: object, sock: Any) -> str:
    """Who a connection counts against: a uid (a unix socket, or loopback TCP whose owner the kernel
    tells), ``loopback`` (where it does not), the /64 of a remote IPv6 address, or the address."""
    return peer_identity(peer, sock)[0]


def peer_identity(peer: object, sock: Any) -> PeerIdentity:
    """``peer_key``'s name, and the uid of a local peer (None: remote, or unknown). Any TCP client
    is asked of the kernel first: a local user reaching one of the host's own non-loopback
    addresses is still that user."""
    if isinstance(peer, tuple) and peer:
        try:
            address = ipaddress.ip_address(str(peer[0]).split("%")[0])
        except ValueError:
            return str(peer[0]), None
        uid = local_owner(peer, getattr(sock, "getsockname", lambda: None)())
        if uid is not None:
            return f"uid {uid}", uid
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            return "loopback", None
        if isinstance(address, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((address, 64), strict=False)), None
        return str(address), None
    credentials = peer_credentials(sock)
    return (f"uid {credentials[0]}", credentials[0]) if credentials is not None else ("unix socket", None)


def unnamed_local(peer: object, sock: Any, identity: PeerIdentity) -> bool:
    """Whether a TCP client from this host (a loopback address, or the server's own address of
    the connection) has no owner the kernel names: its socket was closed before it was asked (or
    the kernel cannot be asked at all, which the caller knows)."""
    if identity[1] is not None or not (isinstance(peer, tuple) and len(peer) >= 2):
        return False
    if identity[0] == "loopback":
        return True
    local = getattr(sock, "getsockname", lambda: None)()
    return isinstance(local, tuple) and bool(local) and str(local[0]) == str(peer[0])


def local_owner(peer: tuple[Any, ...], local: object) -> int | None:
    """The uid owning the client socket of a TCP connection from this host (``peer`` its address
    and port, ``local`` the server's end), asked of the kernel; None for a remote client, a client
    socket already closed, or where the kernel cannot be asked."""
    if not (isinstance(local, tuple) and len(local) >= 2 and len(peer) >= 2):
        return None
    family = socket.AF_INET6 if ":" in str(peer[0]) else socket.AF_INET
    try:
        ends = [
            socket.inet_pton(family, str(host).split("%")[0]).ljust(16, b"\0") for host in (peer[0], local[0])
        ]
        # inet_diag_sockid: the client's end first (its socket is the one asked about).
        ports = struct.pack("!HH", int(peer[1]), int(local[1]))
        sockid = ports + struct.pack("!16s16s", *ends)
        sockid += struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)  # any interface, any cookie
        request = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, _ALL_STATES) + sockid
        header = _NLMSG_HEADER.pack(
            _NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0
        )
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as netlink:
            netlink.settimeout(1.0)
            netlink.sendto(header + request, (0, 0))
            answer = netlink.recv(8192)
        _length, kind, _flags, _sequence, _port = _NLMSG_HEADER.unpack_from(answer)
        if kind != _SOCK_DIAG_BY_FAMILY or len(answer) < _UID_OFFSET + 8:
            return None  # an error message: no such socket (it closed, or is remote), or no sock_diag
        state = answer[_NLMSG_HEADER.size + 1]
        found_ports = answer[_NLMSG_HEADER.size + 4 : _NLMSG_HEADER.size + 8]
        # The kernel falls back to a listening socket on the client's port when the client's own
        # socket is gone: someone else's, never the client's.
        if state == _TCP_LISTEN or found_ports != ports:
            return None
        uid, inode = struct.unpack_from("=II", answer, _UID_OFFSET)
        # No inode: a socket its owner has closed, which the kernel reports as uid 0 (TIME_WAIT):
        # not root's, and not to be counted against root's (the MTA's) share.
        return int(uid) if inode else None
    except (OSError, ValueError, struct.error, AttributeError):
        return None


def kernel_names_owners() -> str | None:
    """None where the kernel answers ``sock_diag`` queries, else why not (a sandbox without
    AF_NETLINK, a kernel without inet_diag): then every loopback client is one peer."""
    try:
        with (
            socket.create_server(("127.0.0.1", 0)) as server,
            socket.create_connection(server.getsockname(), timeout=5),
        ):
            conn, _ = server.accept()
            with conn:  # asked while the client's end is still open
                if local_owner(conn.getpeername(), conn.getsockname()) == os.geteuid():
                    return None
    except OSError as error:
        return error.strerror or str(error)
    return "sock_diag gave no owner for a loopback connection"
