"""Where the service listens and who may talk to it: listen addresses, the client allow-list
(spamd's ``-A``), unix socket mode and owner, and TLS (spamc's ``-S``)."""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

# spamd's 783 needs root to bind. 11783 does not, lies below Linux's ephemeral ports (32768 on),
# so a client's outgoing connection never holds it, and keeps spamd's 783 in its last digits.
DEFAULT_PORT = 11783
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
LOOPBACK = ("127.0.0.0/8", "::1/128")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Address:
    """A TCP ``host``/``port``, or a unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: Path | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, option: str = "--listen", tcp_only: bool = False) -> Address:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` (loopback) or ``unix:PATH``."""
    if text.startswith("unix:") and tcp_only:
        raise UsageError(f"{option} {text}: expected HOST:PORT (HTTP listens on TCP only)")
    if text.startswith("unix:"):
        if not text[5:]:
            raise UsageError(f"{option} {text}: give the socket's path, e.g. unix:/run/spamfilter/spamd.sock")
        return Address(path=Path(text[5:]))
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{option} {text}: expected HOST:PORT, [IPv6]:PORT or unix:PATH")
    host = host.strip("[]") or "127.0.0.1"
    return Address(host=host, port=int(port))


def parse_networks(items: tuple[str, ...] | list[str]) -> list[Network]:
    """``--allow`` values (each may hold several, comma-separated): addresses or CIDR networks."""
    networks: list[Network] = []
    for item in items:
        for part in filter(None, (piece.strip() for piece in item.split(","))):
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise UsageError(f"--allow {part}: not an address or network (e.g. 192.0.2.0/24)") from None
    return networks or [ipaddress.ip_network(net) for net in LOOPBACK]


def peer_allowed(peer: object, networks: list[Network]) -> bool:
    """Whether a TCP peer (``getpeername()``'s tuple) is in the allow-list. Unix socket peers (a
    path or nothing) are allowed: the socket's mode and owner decide who reaches them."""
    if not isinstance(peer, tuple) or not peer:
        return True
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def tls_context(certificate: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server side of TLS for the TCP listeners, or None without a certificate."""
    if certificate is None and key is None:
        return None
    if certificate is None or key is None:
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"cannot use --tls-cert {certificate} / --tls-key {key}: {error}") from None
    return context


def prepare_socket_path(path: Path) -> None:
    """Make room for a unix socket: a stale socket file left by a killed server is removed; a live
    one (a server answers on it) or any other file is an error."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"--listen unix:{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: a leftover
    else:
        raise UsageError(f"--listen unix:{path}: another server is listening there")
    finally:
        probe.close()


def secure_socket(path: Path, mode: int | None, owner: str | None) -> None:
    """Apply ``--socket-mode`` and ``--socket-owner USER[:GROUP]`` to a unix socket."""
    if owner:
        user, _, group = owner.partition(":")
        try:
            uid = pwd.getpwnam(user).pw_uid if user else -1
            gid = grp.getgrnam(group).gr_gid if group else -1
        except KeyError as missing:
            raise UsageError(f"--socket-owner {owner}: no such user or group {missing}") from None
        os.chown(path, uid, gid)
    if mode is not None:
        os.chmod(path, mode)
