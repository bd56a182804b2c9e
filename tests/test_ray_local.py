"""filter --engine ray with the Ray it starts itself, run as a user runs it (a process of its own):
every socket of that Ray listens on loopback only, and a run that goes well says only what
spamfilter says (no Ray warnings, no C++ log lines, no deprecation warning from our own calls)."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT / "examples" / "sample.mbox"
CPP_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [IWEF] \d+ \d+\]", re.M)


def _tree(root: int) -> set[int]:
    """``root`` and its descendants now (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {root}, True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    return tree


def _address(hexadecimal: str) -> str:
    """/proc/net/tcp's little-endian words as an address."""
    raw = bytes.fromhex(hexadecimal)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _listeners(root: int) -> set[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket of ``root`` and its descendants."""
    sockets: dict[str, int] = {}
    for pid in _tree(root):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    sockets[target[8:-1]] = pid
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in sockets:  # LISTEN
                address, port = fields[1].split(":")
                found.add((_address(address), int(port, 16), sockets[fields[9]]))
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_an_embedded_run_listens_on_loopback_only_and_is_quiet(trained_model: Path, tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    command = [sys.executable, "-m", "spamfilter", "filter", "--engine", "ray", "-m", str(trained_model)]
    run = subprocess.Popen(
        [*command, str(SAMPLE), "-o", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=tmp_path,
    )
    listeners: set[tuple[str, int, int]] = set()
    while run.poll() is None:  # ends with the run (the CLI's own bounds)
        listeners |= _listeners(run.pid)
        time.sleep(0.2)  # (a look five times a second: Ray's sockets stay open for the whole run)
    stdout, stderr = run.communicate()
    text = stderr.decode("utf-8", "replace")
    assert run.returncode == 0, text
    assert listeners, "no listening socket of Ray's was seen while it ran"
    everywhere = sorted(entry for entry in listeners if not _loopback(entry[0]))
    assert not everywhere, f"listening beyond loopback: {everywhere}"

    assert "Warning" not in text and "WARNING" not in text, text
    assert not CPP_LOG_LINE.search(text), text
    assert "ray: 1 inputs: 1 filtered" in text
    ours = [line for line in text.splitlines() if not line.startswith("spamfilter: ")]
    assert ours == [], text
