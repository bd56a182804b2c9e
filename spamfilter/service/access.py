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


def parse_networks(items: tuple[str, ...] | list[str], option: str = "--allow") -> list[Network]:
    """``--allow`` values (each may hold several, comma-separated): addresses or CIDR networks."""
    networks: list[Network] = []
    for item in items:
        for part in filter(None, (piece.strip() for piece in item.split(","))):
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise UsageError(f"{option} {part}: not an address or network (e.g. 192.0.2.0/24)") from None
    return networks or [ipaddress.ip_network(net) for net in LOOPBACK]


def parse_users(items: tuple[str, ...] | list[str]) -> tuple[set[int], set[int]]:
    """``--tell-users`` values (user names or uids, ``@group`` names or gids, comma-separated) as
    ``tell_uids``/``tell_gids``; none: the service's own user and root."""
    uids: set[int] = set()
    gids: set[int] = set()
    for item in items:
        for part in filter(None, (piece.strip() for piece in item.split(","))):
            group, name = part.startswith("@"), part.lstrip("@")
            try:
                if group:
                    gids.add(int(name) if name.isdigit() else grp.getgrnam(name).gr_gid)
                else:
                    uids.add(int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid)
            except KeyError:
                raise UsageError(f"--tell-users {part}: no such {'group' if group else 'user'}") from None
    if not uids and not gids:
        uids = {0, os.geteuid()}
    return uids, gids


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


@dataclass(frozen=True)
class BoundSocket:
    """A unix socket this process bound: its path and the inode it made there (device, inode
    and change time: an inode number alone can be reused by a file made since). Only a path that
    still names that very socket is ever removed (a path refused at start, another server's
    socket, or a file put there since, is left alone)."""

    path: Path
    identity: tuple[int, int, int]

    @staticmethod
    def identify(found: os.stat_result) -> tuple[int, int, int]:
        return found.st_dev, found.st_ino, found.st_ctime_ns

    def remove(self) -> None:
        try:
            now = self.path.lstat()
        except OSError:
            return
        if stat.S_ISSOCK(now.st_mode) and self.identify(now) == self.identity:
            self.path.unlink(missing_ok=True)


def check_socket_path(path: Path) -> None:
    """Make room for a unix socket: a stale socket file left by a killed server is removed; a live
    one (a server answers on it) or any other file is an error, and is left as it is."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"--listen unix:{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)  # a socket nobody listens on: a leftover
    except OSError as error:
        raise UsageError(f"--listen unix:{path}: cannot check the socket there: {error.strerror}") from None
    else:
        raise UsageError(f"--listen unix:{path}: another server is listening there")
    finally:
        probe.close()


def bind_unix_socket(path: Path, mode: int | None, owner: str | None) -> tuple[socket.socket, BoundSocket]:
    """A listening-ready unix socket at ``path`` with ``--socket-mode``/``--socket-owner`` applied
    before anyone else can connect: it is bound under umask 0777 (mode 0000: only root gets in),
    then given its owner, then its mode. Without ``--socket-mode`` the mode is what the umask
    would have given."""
    uid, gid = _owner_ids(owner)
    check_socket_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o777)  # the process is single-threaded here: no other file is being made
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(umask)
    bound = BoundSocket(path, BoundSocket.identify(os.lstat(path)))
    try:
        if owner:
            try:
                os.chown(path, uid, gid)
            except PermissionError:
                raise UsageError(
                    f"--socket-owner {owner}: cannot give {path} to {owner} (only root may give a file "
                    "away): run serve as root, or leave --socket-owner out and let --socket-mode "
                    "decide who connects"
                ) from None
        os.chmod(path, (0o777 & ~umask) if mode is None else mode)
        bound = BoundSocket(path, BoundSocket.identify(os.lstat(path)))  # chmod changed its ctime
    except (OSError, UsageError):
        sock.close()
        bound.remove()
        raise
    return sock, bound


def _owner_ids(owner: str | None) -> tuple[int, int]:
    if not owner:
        return -1, -1
    user, _, group = owner.partition(":")
    try:
        uid = pwd.getpwnam(user).pw_uid if user else -1
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError as missing:
        raise UsageError(f"--socket-owner {owner}: no such user or group {missing}") from None
    return uid, gid
