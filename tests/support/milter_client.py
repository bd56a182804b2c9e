"""The MTA side of the milter protocol over the independent ``miltertest`` package: connect and
negotiate, send one message as an MTA does (headers, 64 KB body chunks, end of message), quit."""

from __future__ import annotations

import socket

import miltertest
from miltertest import constants as smfi


def connect(address: tuple[str, int], protocol: int = smfi.SMFI_V6_PROT) -> miltertest.MilterConnection:
    conn = miltertest.MilterConnection(socket.create_connection(address, timeout=60))
    conn.optneg_mta(protocol=protocol)
    return conn


def quit_(conn: miltertest.MilterConnection) -> None:
    """QUIT has no reply: the milter closes the connection."""
    conn._send(smfi.SMFIC_QUIT)
    assert conn.recv(eof_ok=True) is None
    conn.sock.close()


def split(message: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Header fields (values with their leading space, as with SMFIP_HDR_LEADSPC) and body."""
    head, _, body = message.partition(b"\n\n")
    fields: list[tuple[str, str]] = []
    for line in head.decode().split("\n"):
        if line[:1] in (" ", "\t"):
            name, value = fields[-1]
            fields[-1] = (name, value + "\n" + line)
        else:
            name, _, value = line.partition(":")
            fields.append((name, value))
    return fields, body


def send_message(conn: miltertest.MilterConnection, message: bytes, replies: bool) -> list:
    """One message, the way an MTA sends it; the end-of-message replies."""
    fields, body = split(message)
    leading = bool(conn.protocol_flags & smfi.SMFIP_HDR_LEADSPC)
    for name, value in fields:
        value = value if leading else value.lstrip(" ")
        if replies:
            conn.send(smfi.SMFIC_HEADER, name=name, value=value)
        else:
            conn._send(smfi.SMFIC_HEADER, name=name, value=value)
    text = body.decode().replace("\n", "\r\n")  # miltertest sends str, encoded as UTF-8
    for begin in range(0, len(text), smfi.MILTER_CHUNK_SIZE // 2):  # at most 64 KB in UTF-8
        chunk = text[begin : begin + smfi.MILTER_CHUNK_SIZE // 2]
        if replies:
            conn.send(smfi.SMFIC_BODY, buf=chunk)
        else:
            conn._send(smfi.SMFIC_BODY, buf=chunk)
    replies = conn.send_eom()
    if replies[-1][0] == smfi.SMFIR_QUARANTINE:  # miltertest stops there; the final reply follows
        replies.append(conn.recv())
    return replies
