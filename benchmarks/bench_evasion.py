"""Evasion: how much of the test split's spam still gets caught once a spammer changes it.

The test split of the SpamAssassin corpus exactly as ``bench_recipe`` cuts it (70/10/20, seed 123).
Each test spam is changed by each trick of :mod:`spamfilter.evasion` (the ham text the tricks use
comes from the training split's ham, never from the test split), and every copy is classified by:

- spamfilter: this tree's ``filter`` command (``python -m spamfilter filter``, everything it does
  to a message included) with the mail recipe's model, bench_recipe's "mail" row (trained once and
  cached in ``benchmarks/.work/recipe/mail``; ``--model DIR`` scores another), at its threshold;
- bogofilter, SpamAssassin (``spamd --local``: rules and Bayes, no network) and rspamd (Bayes on a
  local redis-server, network modules off), each trained on the same training split.

Reported: spam recall per trick, and the ham FPR over the test split's ham (never changed).
The peers' training and their verdicts (keyed by the sha256 of the messages) are cached in
``benchmarks/.work/evasion/``, so a run after a change to spamfilter only re-runs spamfilter.
The spamfilter model is not retrained when the text extraction changes: retrain it with
``python -m benchmarks.bench_recipe --rows mail --fresh`` (or pass ``--model``).

    python -m benchmarks.bench_evasion --limit 20 --peers none     # quick: 20 spam per trick
    python -m benchmarks.bench_evasion                             # every test spam, every peer
    python -m benchmarks.bench_evasion --model DIR --json evasion.json

The peers are Debian packages for this benchmark only (not installed by CI):
``apt-get install bogofilter spamassassin spamc spamd rspamd redis-server``. A peer that is not
installed gets "not installed" in its column. No peer reaches the network; the services listen on
127.0.0.1 only and are stopped when the run ends.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from spamfilter.evasion import TRICKS, ham_paragraphs
from spamfilter.mail import extract_text, split_mbox

from .bench_recipe import mail_model
from .common import DEFAULT_WORKDIR, ROOT, free_port, script_parser, table
from .mail_corpus import SEED, load_corpus, messages_of, split_indexes

OUT = DEFAULT_WORKDIR / "evasion"
PEERS = ("bogofilter", "spamassassin", "rspamd")
TITLES = {
    "spamfilter": "spamfilter",
    "bogofilter": "bogofilter",
    "spamassassin": "SpamAssassin",
    "rspamd": "rspamd",
}
ROWS = ("none", *TRICKS)
HAM_ROW = "ham"
REPLY_ROW = "replies"  # ham: a colleague's reply that quotes a test spam ("is this spam?")
START_TIMEOUT = 300.0  # seconds for spamd / rspamd / redis to listen (spamd compiles its rules)


# --------------------------------------------------------------------------- the messages


@dataclass(frozen=True)
class Split:
    train_spam: list[bytes]
    train_ham: list[bytes]
    test_spam: list[bytes]
    test_ham: list[bytes]


def load_split(seed: int) -> Split:
    """The benchmarks' split (bench_recipe's) as raw messages."""
    raws, labels = load_corpus()
    cut = split_indexes(labels, seed)
    return Split(
        messages_of(cut.train, raws, 1),
        messages_of(cut.train, raws, 0),
        messages_of(cut.test, raws, 1),
        messages_of(cut.test, raws, 0),
    )


def ham_pool(split: Split, work: Path) -> list[str]:
    """The training ham's paragraphs, kept from the first run: ``ham_paragraphs`` reads them with
    the filter's text extraction, and a change to that must not change the benchmark's messages
    (the runs before and after it compare the same mail, and the peers' verdicts stay cached)."""
    path = work / f"ham-pool-{digest(split.train_ham)[:16]}.json"
    work.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no work folder yet
    if not path.is_file():
        path.write_text(json.dumps(ham_paragraphs(split.train_ham)))
    pool: list[str] = json.loads(path.read_text())
    return pool


def changed_spam(split: Split, pool: list[str], limit: int | None, seed: int) -> dict[str, list[bytes]]:
    """Row name -> messages: the test spam as it is ("none"), then a changed copy per trick."""
    spam = split.test_spam[:limit]
    rows = {"none": spam}
    for name, trick in TRICKS.items():
        rows[name] = [trick(raw, random.Random(f"{seed}:{name}:{i}"), pool) for i, raw in enumerate(spam)]
    return rows


def replies_quoting(spam: list[bytes], pool: list[str], seed: int) -> list[bytes]:
    """Ham that quotes spam: for each spam a short reply of ordinary words (a training ham
    paragraph) above the spam's text quoted with '> ', as a colleague forwards a spam to ask
    about it. The reply is ham whatever it quotes."""
    replies = []
    for i, raw in enumerate(spam):
        rng = random.Random(f"{seed}:reply:{i}")
        message = email.message_from_bytes(without_from_line(raw), policy=email.policy.default)
        subject = " ".join(str(message.get("Subject", "")).split())[:120]
        quoted_text = extract_text(raw).partition("\n")[2]
        quoted = "\n".join("> " + line for line in quoted_text.splitlines()[:60])
        body = f"{rng.choice(pool)}\n\nOn Mon, 2 Sep 2002, someone wrote:\n{quoted}\n"
        reply = email.message.EmailMessage()
        reply["From"] = "Colleague <colleague@example.org>"
        reply["To"] = "me@example.org"
        reply["Subject"] = f"Re: {subject}"
        reply["Date"] = "Mon, 2 Sep 2002 10:00:00 +0000"
        reply.set_content(body)
        replies.append(reply.as_bytes(policy=email.policy.SMTP.clone(linesep="\n")))
    return replies


def without_from_line(raw: bytes) -> bytes:
    """One RFC 822 message, as the peers read a file: without the mbox 'From ' line."""
    return raw.split(b"\n", 1)[1] if raw.startswith(b"From ") else raw


def as_mbox_entry(raw: bytes) -> bytes:
    """``raw`` as one mbox message: a 'From ' line, body 'From ' lines escaped, a blank line at the end."""
    message = without_from_line(raw)
    eol = b"\r\n" if message.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    first = (
        raw.split(b"\n", 1)[0].rstrip(b"\r")
        if raw.startswith(b"From ")
        else b"From evasion  Mon Sep  2 00:00:00 2002"
    )
    entry = first + eol + re.sub(rb"(?m)^From ", b">From ", message)
    while not entry.endswith(eol + eol):
        entry += eol
    return entry


def write_files(folder: Path, messages: list[bytes]) -> list[Path]:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    paths = [folder / f"{i:05d}.eml" for i in range(len(messages))]
    for path, raw in zip(paths, messages, strict=True):
        path.write_bytes(without_from_line(raw))
    return paths


def digest(messages: list[bytes]) -> str:
    hashed = hashlib.sha256()
    for raw in messages:
        hashed.update(hashlib.sha256(raw).digest())
    return hashed.hexdigest()


# --------------------------------------------------------------------------- spamfilter


def spamfilter_verdicts(model: Path, messages: list[bytes], work: Path) -> list[bool]:
    """Every message through one ``filter`` run over an mbox; spam where it wrote X-Spam-Flag: YES."""
    source, tagged = work / "filter-in.mbox", work / "filter-out.mbox"
    source.write_bytes(b"".join(as_mbox_entry(raw) for raw in messages))
    command = [sys.executable, "-m", "spamfilter", "filter", "--model", str(model), "--format", "mbox"]
    run = subprocess.run([*command, "-q", "-o", str(tagged), str(source)], cwd=ROOT, capture_output=True)
    if run.returncode != 0:
        raise SystemExit(
            f"spamfilter filter failed ({run.returncode}): {run.stderr.decode(errors='replace')[-2000:]}"
        )
    with open(tagged, "rb") as handle:
        out = list(split_mbox(handle))
    if len(out) != len(messages):
        raise SystemExit(f"spamfilter filter wrote {len(out)} messages for {len(messages)}")
    # the filter puts its fields right after the 'From ' line (the corpus has old ones of its own)
    return [raw.split(b"\n", 2)[1].rstrip(b"\r") == b"X-Spam-Flag: YES" for raw in out]


# --------------------------------------------------------------------------- local services


def wait_listening(port: int, process: subprocess.Popen[bytes] | None, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:.0f} s")


@contextlib.contextmanager
def service(argv: list[str], port: int, what: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A local daemon in the foreground of a child process, stopped (by its PID) on the way out."""
    with open(log, "ab") as output:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, process, what)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(argv: list[str], what: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode not in ok:
        raise RuntimeError(
            f"{what} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-800:]}"
        )
    return done


def give_to(user: str, *paths: Path) -> None:
    """Running as root, the daemons drop to ``user``: their folders must be theirs."""
    if os.geteuid() != 0:
        return
    for path in paths:
        for folder, _, files in os.walk(path):
            shutil.chown(folder, user)
            for name in files:
                shutil.chown(os.path.join(folder, name), user)


# --------------------------------------------------------------------------- the peers


class Peer:
    name = ""
    programs: tuple[str, ...] = ()

    def __init__(self, work: Path) -> None:
        self.work = work / self.name

    def missing(self) -> list[str]:
        return [program for program in self.programs if shutil.which(program) is None]

    def trained(self, stamp: str) -> bool:
        return (self.work / "trained").is_file() and (self.work / "trained").read_text() == stamp

    def train(self, spam: list[Path], ham: list[Path], stamp: str) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self._train(spam, ham)
        (self.work / "trained").write_text(stamp)

    def _train(self, spam: list[Path], ham: list[Path]) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def scorer(self) -> Iterator[Callable[[list[Path]], list[bool]]]:
        raise NotImplementedError
        yield  # a generator for contextmanager's sake


class Bogofilter(Peer):
    name = "bogofilter"
    programs = ("bogofilter",)

    def _train(self, spam: list[Path], ham: list[Path]) -> None:
        for flag, paths in (("-s", spam), ("-n", ham)):
            for path in paths:
                run(["bogofilter", "-d", str(self.work), flag, "-I", str(path)], "bogofilter training")

    @contextlib.contextmanager
    def scorer(self) -> Iterator[Callable[[list[Path]], list[bool]]]:
        def score(paths: list[Path]) -> list[bool]:
            # -v -B: one line per file, "path X-Bogosity: Spam|Ham|Unsure, ..."; Unsure is not spam,
            # as bogofilter delivers it
            argv = ["bogofilter", "-d", str(self.work), "-v", "-B", *map(str, paths)]
            out = run(argv, "bogofilter", ok=(0, 1, 2)).stdout  # the last message's verdict; 3 is an error
            verdicts = dict(re.findall(r"(?m)^(\S+) X-Bogosity: (\w+)", out.decode()))
            return [verdicts[str(path)] == "Spam" for path in paths]

        yield score


class SpamAssassin(Peer):
    """spamd --local with Bayes from sa-learn; spamc -c per message (exit 1: spam)."""

    name = "spamassassin"
    programs = ("sa-learn", "spamd", "spamc")
    USER = "nobody"

    def _settings(self) -> list[str]:
        lines = [
            f"bayes_path {self.work / 'bayes'}",
            "use_bayes 1",
            "bayes_auto_learn 0",
            "bayes_auto_expire 0",
        ]
        return [f"--cf={line}" for line in lines]

    def _train(self, spam: list[Path], ham: list[Path]) -> None:
        for kind, paths in (("--spam", spam), ("--ham", ham)):
            run(["sa-learn", "--local", *self._settings(), kind, str(paths[0].parent)], "sa-learn")

    @contextlib.contextmanager
    def scorer(self) -> Iterator[Callable[[list[Path]], list[bool]]]:
        home = self.work / "home"
        home.mkdir(exist_ok=True)
        give_to(self.USER, self.work)
        port = free_port()
        argv = ["spamd", "--local", "--nouser-config", "--listen", f"127.0.0.1:{port}", "--max-children", "2"]
        argv += ["--syslog", "stderr", "--helper-home-dir", str(home), *self._settings()]
        if os.geteuid() == 0:
            argv += ["--username", self.USER]
        with service(argv, port, "spamd", self.work / "spamd.log"):

            def one(path: Path) -> bool:
                with open(path, "rb") as message:
                    done = subprocess.run(
                        ["spamc", "-d", "127.0.0.1", "-p", str(port), "-x", "-c", "-t", "300"],
                        stdin=message,
                        capture_output=True,
                    )
                if done.returncode not in (0, 1):
                    raise RuntimeError(f"spamc failed ({done.returncode}) on {path}")
                return done.returncode == 1

            def score(paths: list[Path]) -> list[bool]:
                with ThreadPoolExecutor(2) as pool:
                    return list(pool.map(one, paths))

            yield score


# rspamd's local configuration for an offline run: network modules off (they would fire on DNS
# failures, not on content), Bayes on the local redis, learning only when told.
_RSPAMD_OFF = (
    "antivirus", "arc", "asn", "bimi", "dcc", "dkim", "dmarc", "external_services", "fuzzy_check",
    "mx_check", "once_received", "rbl", "rspamd_update", "spf", "url_redirector",
)  # fmt: skip
_RSPAMD_LOCAL = {
    "hfilter.conf": "helo_enabled = false;\nhostname_enabled = false;\nfrom_enabled = false;\n",
    "phishing.conf": "phishtank_enabled = false;\nopenphish_enabled = false;\n",
    "options.inc": 'dns {\n  nameserver = ["127.0.0.1:53"];\n  timeout = 0.2s;\n  retransmits = 1;\n}\n',
    "classifier-bayes.conf": 'backend = "redis";\nservers = "127.0.0.1:{redis}";\nautolearn = false;\n',
    "worker-normal.inc": 'count = 1;\nbind_socket = "127.0.0.1:{normal}";\n',
    "worker-controller.inc": 'bind_socket = "127.0.0.1:{controller}";\n',
    "worker-proxy.inc": 'bind_socket = "127.0.0.1:{proxy}";\n',
    "worker-fuzzy.inc": "count = -1;\n",
    **{f"{module}.conf": "enabled = false;\n" for module in _RSPAMD_OFF},
}
_RSPAMD_SPAM_ACTIONS = {"reject", "rewrite subject", "add header"}


class Rspamd(Peer):
    """rspamd 3.x, Bayes in a redis-server whose dump is the cached training."""

    name = "rspamd"
    programs = ("rspamd", "rspamc", "redis-server", "redis-cli")
    USER = "_rspamd"

    def _train(self, spam: list[Path], ham: list[Path]) -> None:
        with self._running() as ports:
            for command, paths in (("learn_spam", spam), ("learn_ham", ham)):
                controller = f"127.0.0.1:{ports['controller']}"
                run(
                    ["rspamc", "-h", controller, "-n", "2", "-t", "300", command, str(paths[0].parent)],
                    "rspamc",
                )
            run(["redis-cli", "-p", str(ports["redis"]), "SAVE"], "redis-cli SAVE")

    @contextlib.contextmanager
    def _running(self) -> Iterator[dict[str, int]]:
        ports = {name: free_port() for name in ("redis", "normal", "controller", "proxy")}
        local = self.work / "local.d"
        local.mkdir(exist_ok=True)
        for name, text in _RSPAMD_LOCAL.items():
            for key, port in ports.items():
                text = text.replace("{" + key + "}", str(port))
            (local / name).write_text(text)
        state = {name: self.work / name for name in ("redis", "db", "run", "log")}
        for folder in state.values():
            folder.mkdir(exist_ok=True)
        redis = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(ports["redis"]),
            "--dir",
            str(state["redis"]),
        ]
        redis += ["--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"]
        rspamd = ["rspamd", "-f", f"--var=LOCAL_CONFDIR={self.work}"]
        rspamd += [f"--var={name.upper()}DIR={state[name]}" for name in ("db", "run", "log")]
        if os.geteuid() == 0:
            give_to(self.USER, state["db"], state["run"], state["log"])
            rspamd += ["-u", self.USER, "-g", self.USER]
        with (
            service(redis, ports["redis"], "redis-server", self.work / "redis.log"),
            service(rspamd, ports["normal"], "rspamd", self.work / "rspamd.log"),
        ):
            wait_listening(ports["controller"], None, "rspamd's controller")
            yield ports

    @contextlib.contextmanager
    def scorer(self) -> Iterator[Callable[[list[Path]], list[bool]]]:
        with self._running() as ports:

            def score(paths: list[Path]) -> list[bool]:
                normal = f"127.0.0.1:{ports['normal']}"
                out = run(
                    ["rspamc", "-h", normal, "-n", "2", "-t", "300", "symbols", *map(str, paths)], "rspamc"
                )
                actions = dict(
                    re.findall(
                        r"(?m)^Results for file: (\S+) \(.*?\n(?:.*\n)*?Action: ([^\n]+)", out.stdout.decode()
                    )
                )
                return [actions[str(path)].strip() in _RSPAMD_SPAM_ACTIONS for path in paths]

            yield score


PEER_TYPES: dict[str, type[Peer]] = {"bogofilter": Bogofilter, "spamassassin": SpamAssassin, "rspamd": Rspamd}


# --------------------------------------------------------------------------- the run


def peer_verdicts(
    peer: Peer, split: Split, rows: dict[str, list[bytes]], work: Path, seed: int
) -> dict[str, list[bool]]:
    """The peer's verdict on every row, from the cache where the same messages were scored before."""
    stamp = f"split {seed}: {digest(split.train_spam)} {digest(split.train_ham)}"
    cache_file = work / f"verdicts-{peer.name}.json"
    cache: dict[str, list[bool]] = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    keys = {
        row: hashlib.sha256(f"{stamp} {digest(messages)}".encode()).hexdigest()
        for row, messages in rows.items()
    }
    todo = [row for row in rows if keys[row] not in cache]
    if todo:
        if not peer.trained(stamp):
            started = time.perf_counter()
            print(f"training {peer.name} on the training split ...", flush=True)
            spam = write_files(work / "train" / "spam", split.train_spam)
            ham = write_files(work / "train" / "ham", split.train_ham)
            peer.train(spam, ham, stamp)
            print(f"  {peer.name} trained in {time.perf_counter() - started:.0f} s", flush=True)
        with peer.scorer() as score:
            for row in todo:
                started = time.perf_counter()
                cache[keys[row]] = score(write_files(work / "messages" / row, rows[row]))
                cache_file.write_text(json.dumps(cache))
                print(f"  {peer.name} {row}: {time.perf_counter() - started:.0f} s", flush=True)
    return {row: cache[keys[row]] for row in rows}


def cpu_line() -> str:
    """The CPU model and whether it has AVX-512 / VNNI (what the int8 kernels gain from)."""
    model, flags = "?", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    extensions = [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if flag in flags]
    return f"{model}, {len(os.sched_getaffinity(0))} cores in affinity; {', '.join(extensions) or 'no AVX2'}"


def cell(verdicts: list[bool] | str, digits: int = 1) -> str:
    if isinstance(verdicts, str):
        return verdicts
    caught = sum(verdicts)
    return f"{100 * caught / len(verdicts):.{digits}f} % ({caught}/{len(verdicts)})" if verdicts else "-"


def report(results: dict[str, dict[str, list[bool]] | str]) -> str:
    headers = ["change to the spam", *(TITLES[tool] for tool in results)]
    lines = []
    labels = {
        HAM_ROW: "ham marked spam (FPR, test ham)",
        REPLY_ROW: "ham replies quoting a test spam, marked spam",
    }
    for row in (*ROWS, HAM_ROW, REPLY_ROW):
        label = labels.get(row, row)
        digits = 2 if row == HAM_ROW else 1  # an FPR budget is counted in tenths of a percent
        lines.append([label, *(r if isinstance(r, str) else cell(r[row], digits) for r in results.values())])
    return table(headers, lines)


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--peers", default="all", help="none, all, or a comma list of " + ", ".join(PEERS))
    parser.add_argument("--limit", type=int, default=None, help="at most N test spam per trick (a quick run)")
    parser.add_argument("--model", type=Path, default=None, help="score this model directory instead")
    parser.add_argument("--seed", type=int, default=SEED, help="the split's (bench_recipe's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the verdict counts here")
    args = parser.parse_args()
    peers = [] if args.peers == "none" else list(PEERS) if args.peers == "all" else args.peers.split(",")
    if unknown := sorted(set(peers) - set(PEERS)):
        parser.error(f"--peers: unknown {', '.join(unknown)} (choose from {', '.join(PEERS)}, all or none)")
    if args.model is not None and not (args.model / "spamfilter.json").is_file():
        parser.error(f"--model: {args.model} is not a model directory (no spamfilter.json)")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit: at least 1")

    work = OUT if args.seed == SEED else OUT / f"split-{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    split = load_split(args.seed)
    pool = ham_pool(split, work)
    rows = {
        **changed_spam(split, pool, args.limit, args.seed),
        HAM_ROW: split.test_ham,
        REPLY_ROW: replies_quoting(split.test_spam[: args.limit], pool, args.seed),
    }
    print(
        f"test split: {len(split.test_spam)} spam ({len(rows['none'])} per trick), "
        f"{len(split.test_ham)} ham; "
        f"training split: {len(split.train_spam)} spam, {len(split.train_ham)} ham",
        flush=True,
    )

    model = args.model or mail_model(args.seed)
    threshold = json.loads((model / "spamfilter.json").read_text()).get("threshold")
    started = time.perf_counter()
    everything = [raw for messages in rows.values() for raw in messages]
    flat = iter(spamfilter_verdicts(model, everything, work))
    results: dict[str, dict[str, list[bool]] | str] = {
        "spamfilter": {row: [next(flat) for _ in messages] for row, messages in rows.items()}
    }
    print(f"spamfilter: {len(everything)} messages in {time.perf_counter() - started:.0f} s", flush=True)
    for name in peers:
        peer = PEER_TYPES[name](work / "peers")
        if missing := peer.missing():
            results[name] = f"not installed ({', '.join(missing)})"
            continue
        try:
            results[name] = peer_verdicts(peer, split, rows, work, args.seed)
        except RuntimeError as error:  # a benchmark: one peer failing still leaves the others' figures
            results[name] = f"failed: {error}".splitlines()[0][:200]
            print(f"{name}: {error}", file=sys.stderr)

    command = "python -m benchmarks.bench_evasion " + " ".join(sys.argv[1:])
    print(f"\n{command}\nmodel {model} (threshold {threshold}); CPU: {cpu_line()}\n")
    print(report(results))
    if args.json:
        summary = {
            tool: r if isinstance(r, str) else {row: [sum(v), len(v)] for row, v in r.items()}
            for tool, r in results.items()
        }
        meta = {"command": command, "model": str(model), "threshold": threshold, "cpu": cpu_line()}
        args.json.write_text(json.dumps({**meta, "caught_of": summary}, indent=2))


if __name__ == "__main__":
    main()
