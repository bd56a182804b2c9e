#!/bin/sh
# A long fuzz run: the property tests of the filter paths (mbox, CSV, pipeline mode) and of mail
# handling (text extraction, mbox splitting, header insertion) with many more examples than CI.
#   sh benchmarks/fuzz_long.sh 5000
set -eu
cd "$(dirname "$0")/.."
examples="${1:-5000}"
SPAMFILTER_FUZZ_EXAMPLES="$examples" exec .venv/bin/python -m pytest -q -p no:cacheprovider \
  --hypothesis-show-statistics tests/test_fuzz.py tests/test_mail.py -k "any_ or never_raises or insert_then_remove or concatenation or round_trip or pipeline_mode_on"
