#!/usr/bin/env bash
# Try the milter on one machine, without touching any mail system there: starts `spamfilter serve
# --milter` on a free loopback port and a private Postfix (its own configuration, queue and Maildir
# in a fresh folder under /tmp, SMTP on a free 127.0.0.1 port, delivering only to its own test
# domain) with smtpd_milters pointing at it; sends one message through it (with swaks when it is
# installed, else Python's smtplib), prints the message as Postfix delivered it, X-Spam-Flag and
# X-Spam-Status included, and stops and removes everything.
#
#   sudo examples/milter/try.sh [-m MODEL_DIR] [MESSAGE_FILE]
#
# Needs root (Postfix's master binds and switches users) and a Postfix: an installed one, or the
# Debian package unpacked into /opt/postfix as .ci/run does ($POSTFIX_ROOT names another folder),
# with its accounts (user postfix, group postdrop). The Postfix part is tests/support/postfix_harness.py,
# which documents what it sets up. Without MESSAGE_FILE a short prize-draw spam is sent. The model:
# -m MODEL_DIR, else the one `spamfilter serve` uses by default. $PYTHON: the Python that has
# spamfilter installed (default: the clone's .venv, else python3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
usage() { grep -m1 '^#   sudo' "$0" | sed 's/^#   sudo /usage: /' >&2; exit 2; }
model_args=()
while getopts "m:h" option; do
  case $option in
    m) model_args=(-m "$OPTARG") ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
message=${1:-}
if [ -n "$message" ] && [ ! -r "$message" ]; then
  echo "try.sh: cannot read $message" >&2
  exit 2
fi

work=$(mktemp -d)
serve_pid=
stop() {
  if [ -n "$serve_pid" ] && kill -TERM "$serve_pid" 2>/dev/null; then
    wait "$serve_pid" 2>/dev/null || true
    echo "== stopped spamfilter serve"
  fi
  rm -rf "$work"
}
trap stop EXIT

# 1. The milter, on a free loopback port; ready once it says it listens (the model is loaded then).
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$python" -m spamfilter serve "${model_args[@]}" --milter "127.0.0.1:$port" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 600); do  # 60 s at most
  grep -q "listening on 127.0.0.1:$port (milter protocol)" "$work/serve.log" && break
  if ! kill -0 "$serve_pid" 2>/dev/null; then
    serve_pid=
    echo "try.sh: spamfilter serve did not start:" >&2
    cat "$work/serve.log" >&2
    exit 1
  fi
  sleep 0.1
done
grep -q "listening on 127.0.0.1:$port" "$work/serve.log" || { cat "$work/serve.log" >&2; exit 1; }
echo "== spamfilter serve --milter 127.0.0.1:$port: $(grep -o 'model .*' "$work/serve.log" | head -1)"

# 2. Postfix with the milter, one message through it, the delivered message shown; leaving the
# `with` block stops Postfix and removes its folder.
PYTHONPATH="$repo/tests/support${PYTHONPATH:+:$PYTHONPATH}" "$python" - "$port" "$message" <<'PYTHON'
import shutil
import subprocess
import sys
import time
from pathlib import Path

from postfix_harness import DOMAIN, Postfix, postfix_unavailable

port, message_file = sys.argv[1], sys.argv[2]
reason = postfix_unavailable()
if reason is not None:
    sys.exit(f"try.sh: {reason}")
if message_file:
    message = Path(message_file).read_bytes()
else:
    message = (
        "From: <promotions@example.org>\nTo: <alice@test.example>\nSubject: You have WON\n\n"
        "WINNER!! You have won a 1000 pound prize. Call 09061701461 to claim now\n"
    ).encode()
sender, recipient = "sender@example.org", f"alice@{DOMAIN}"
# tempfail: were the milter to fail, the message would wait in the queue rather than pass untagged.
with Postfix(milter=f"inet:127.0.0.1:{port}", default_action="tempfail") as mta:
    print(f"== Postfix {mta.installation.version} on 127.0.0.1:{mta.smtp_port} (master pid {mta.master_pid}), "
          f"smtpd_milters = inet:127.0.0.1:{port}, folder {mta.root}", flush=True)
    swaks = shutil.which("swaks")
    if swaks:
        done = subprocess.run(
            [swaks, "--server", f"127.0.0.1:{mta.smtp_port}", "--from", sender, "--to", recipient,
             "--data", "-", "--hide-all"],
            input=message, capture_output=True, timeout=120, check=False,
        )
        if done.returncode != 0:
            sys.exit(f"try.sh: swaks failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        print(f"== sent with swaks to {recipient}", flush=True)
    else:
        reply = mta.send(message, sender, recipient)
        print(f"== sent with smtplib to {recipient}: {reply.code} {reply.text}", flush=True)
        if reply.code != 250:
            sys.exit(f"try.sh: Postfix refused the message:\n{mta.log()}")
    deadline = time.monotonic() + 60
    while not mta.delivered() and time.monotonic() < deadline:
        time.sleep(0.1)
    delivered = mta.delivered()
    if not delivered:
        sys.exit(f"try.sh: nothing delivered within 60 s; Postfix's log:\n{mta.log()}")
    print(f"== delivered to {mta.mailbox}/new:")
    sys.stdout.buffer.write(delivered[0])
    sys.stdout.flush()
print("== stopped Postfix and removed its folder", flush=True)
PYTHON
