#!/usr/bin/env bash
# Install sizes, each in a fresh virtualenv under a temporary folder, from this checkout:
#
#   base, cpu     pip install '.[cpu]'                         filter, classify, eval (a mail server)
#   base, gpu     pip install '.[gpu]'                         the same with onnxruntime-gpu
#   train, cpu    pip install torch==2.13.0 '.[cpu,train]'     also train and export
#   train, gpu    pip install torch==2.13.0 '.[gpu,train]'     what `make` installs, less the test tools
#
# and a table of their sizes in MiB (du of the whole virtualenv). In each base install it checks
# that torch and pandas cannot be imported and that `spamfilter filter --format email --model DIR`
# tags a real message (X-Spam-Flag added, body unchanged, exit 0 under --strict), with DIR a model
# directory trained elsewhere. pip may download from the package index.
#
# usage: bash benchmarks/install_sizes.sh MODEL_DIR [MESSAGE]
#   MESSAGE: one RFC 822 message; default the first message of ../shared/data/spamassassin/spam.mbox
#   KEEP=1 keeps the virtualenvs (their folder is printed); PYTHON picks the interpreter (python3).
set -euo pipefail

if [ $# -lt 1 ] || [ ! -d "$1" ]; then
  echo "usage: bash benchmarks/install_sizes.sh MODEL_DIR [MESSAGE]" >&2
  exit 2
fi
project=$(cd "$(dirname "$0")/.." && pwd)
model=$(cd "$1" && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/install-sizes.XXXXXX")
if [ -z "${KEEP:-}" ]; then
  trap 'rm -rf "$work"' EXIT
fi

if [ $# -ge 2 ]; then
  message=$2
else
  # The first message of the mbox without its "From " separator line, as an MTA hands it over.
  message=$work/message.eml
  awk 'NR > 1 && /^From / { exit } NR > 1 { print }' "$project/../shared/data/spamassassin/spam.mbox" >"$message"
fi

failed=0
rows=()

install() { # name, pip arguments...
  local name=$1
  shift
  local venv=$work/$name
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 |
    grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  "$venv/bin/python" -c "import spamfilter" # the install really happened
  local mib packages runtime
  mib=$(du -sm "$venv" | cut -f1)
  packages=$("$venv/bin/python" -m pip list --format freeze 2>/dev/null | wc -l)
  runtime=$("$venv/bin/python" -m pip list --format freeze 2>/dev/null |
    grep -iE '^(onnxruntime|onnxruntime-gpu|torch)==' | tr '\n' ' ')
  local shown=() argument
  for argument in "$@"; do
    case $argument in *"["*) shown+=("'$argument'") ;; *) shown+=("$argument") ;; esac
  done
  rows+=("$(printf '| %s | `pip install %s` | %s | %s | %s|' "$name" "${shown[*]}" "$mib" "$packages" "$runtime")")
}

check_base() { # name
  local venv=$work/$1
  local module
  for module in torch pandas onnx matplotlib; do
    if "$venv/bin/python" -c "import $module" 2>/dev/null; then
      echo "$1: import $module works, but the base install must not have it" >&2
      failed=1
    else
      echo "$1: import $module fails, as it should"
    fi
  done
  local out=$work/$1.tagged.eml status=0
  (cd "$work" && "$venv/bin/spamfilter" filter --format email --strict --model "$model" \
    <"$message" >"$out" 2>"$work/$1.stderr") || status=$?
  if [ "$status" -ne 0 ]; then
    echo "$1: spamfilter filter exited $status: $(tail -n 1 "$work/$1.stderr")" >&2
    failed=1
    return
  fi
  # The body is everything after the first empty line; the filter only adds header lines.
  if ! grep -q '^X-Spam-Flag: \(YES\|NO\)$' "$out"; then
    echo "$1: no X-Spam-Flag in the output" >&2
    failed=1
  elif ! cmp -s <(sed '1,/^$/d' "$message") <(sed '1,/^$/d' "$out"); then
    echo "$1: the body changed" >&2
    failed=1
  else
    echo "$1: spamfilter filter --format email tagged the message: $(grep -m 2 '^X-Spam-' "$out" | tr '\n' ' ')"
  fi
}

cd "$project"
"$python" -m venv "$work/empty"
rows+=("$(printf '| empty virtualenv | `%s -m venv` | %s | %s | |' "$python" "$(du -sm "$work/empty" | cut -f1)" \
  "$("$work/empty/bin/python" -m pip list --format freeze 2>/dev/null | wc -l)")")
install "base, cpu" ".[cpu]"
check_base "base, cpu"
install "base, gpu" ".[gpu]"
check_base "base, gpu"
install "train, cpu" "torch==2.13.0" ".[cpu,train]"
install "train, gpu" "torch==2.13.0" ".[gpu,train]"

echo
echo "| install | command | MiB | packages | runtime |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
echo "$("$python" --version), $(uname -sm); model directory $model; message $message"
if [ -n "${KEEP:-}" ]; then
  echo "virtualenvs kept in $work"
fi
exit "$failed"
