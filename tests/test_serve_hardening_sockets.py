"""Unix sockets: the service removes only what it made. A path refused at start (a regular file,
another server's live socket) is left as it was, a start that fails on another listener removes
only the sockets it bound, and a socket path taken over by another file is not touched at exit.
The socket's mode is in place before anyone else can connect, and a busy port fails before the
model is loaded."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.spamd_server import Server

from spamfilter.service import access


def serve(model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "spamfilter", "serve", "--model", str(model), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def ping(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(path))
        conn.sendall(b"PING SPAMC/1.5\r\n\r\n")
        return conn.recv(100)


def test_a_regular_file_is_refused_and_kept(trained_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me\n")
    done = serve(trained_model, "--listen", f"unix:{path}")
    assert done.returncode == 2, done.stderr
    assert "not a socket" in done.stderr and "Traceback" not in done.stderr
    assert path.read_text() == "keep me\n"


def test_a_second_server_leaves_the_first_ones_socket(trained_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "spamd.sock"
    with Server(trained_model, listen=(f"unix:{path}",)) as first:
        second = serve(trained_model, "--listen", f"unix:{path}")
        assert second.returncode == 2, second.stderr
        assert "another server is listening there" in second.stderr
        assert path.exists()
        assert ping(path) == b"SPAMD/1.5 0 PONG\r\n"  # the first still answers on its path
        assert first.stop() == 0
    assert not path.exists()  # its own socket, removed by the first at exit


@pytest.mark.parametrize("unix_first", [False, True])
def test_a_failed_start_removes_only_what_it_bound(
    trained_model: Path, tmp_path: Path, unix_first: bool
) -> None:
    sock_path, plain = tmp_path / "bound.sock", tmp_path / "plain.txt"
    plain.write_text("not ours\n")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        if unix_first:
            # The socket is bound, the busy port fails next: the socket goes, it was ours.
            done = serve(trained_model, "--listen", f"unix:{sock_path}", "--listen", busy)
        else:
            # The busy port fails first: the file named after it is never touched.
            done = serve(trained_model, "--listen", busy, "--listen", f"unix:{plain}")
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on {busy}" in done.stderr and "Traceback" not in done.stderr
    assert plain.read_text() == "not ours\n"
    assert not sock_path.exists()


def test_a_socket_replaced_after_binding_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "spamd.sock"
    sock, made = access.bind_unix_socket(path, None, None)
    sock.close()
    path.unlink()
    path.write_text("someone else's file\n")  # a file put in its place since
    made.remove()
    assert path.read_text() == "someone else's file\n"
    path.unlink()
    other, _ = access.bind_unix_socket(path, None, None)  # another socket at the same path
    made.remove()
    assert stat.S_ISSOCK(path.lstat().st_mode)
    other.close()


def test_the_socket_mode_is_set_before_anyone_can_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spamd.sock"
    seen: list[int] = []
    real_chmod = os.chmod

    def chmod(target: object, mode: int) -> None:
        seen.append(stat.S_IMODE(os.lstat(str(target)).st_mode))  # its mode until this call
        real_chmod(target, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(access.os, "chmod", chmod)
    umask = os.umask(0)  # the adversarial case: a umask that lets everyone in
    try:
        sock, _made = access.bind_unix_socket(path, 0o600, None)
    finally:
        os.umask(umask)
    sock.close()
    assert seen == [0]  # mode 0000 from bind to chmod: nobody but root could connect
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600


def test_a_busy_port_fails_before_the_model_loads(tmp_path: Path) -> None:
    missing = tmp_path / "no-model-here"  # loading it would fail with a model error
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        done = serve(missing, "--listen", busy)
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on {busy}" in done.stderr and "Traceback" not in done.stderr


def test_a_socket_owner_that_cannot_be_given_names_the_change_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Giving a file away needs root, and the tests run as root: the refusal an unprivileged serve
    # meets is simulated here (the only stand-in in this file).
    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(access.os, "chown", refuse)
    path = tmp_path / "spamd.sock"
    with pytest.raises(access.UsageError) as refused:
        access.bind_unix_socket(path, 0o660, "root:root")
    assert f"--socket-owner root:root: cannot give {path} to root:root" in str(refused.value)
    assert "run serve as root" in str(refused.value)
    assert not path.exists()  # the socket it bound is gone again
