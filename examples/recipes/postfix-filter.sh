#!/bin/sh
# Postfix content filter: tag one message with spamfilter and hand it back to Postfix.
#
# Called by pipe(8) as configured in postfix-master.cf:
#     postfix-filter.sh -f SENDER -- RECIPIENT...
# with the message on standard input. Install: install -m 755 postfix-filter.sh
# /usr/local/bin/postfix-filter.sh (see postfix-master.cf for the rest).
#
# Exit codes are what pipe(8) understands (sysexits.h): 0 delivered, 75 (EX_TEMPFAIL)
# "try again later". Every failure here exits 75: the message stays in the Postfix queue and
# is retried (for maximal_queue_lifetime, 5 days by default), it is never bounced and never
# re-injected untagged or truncated. Even a bad command line (a master.cf mistake) defers
# instead of bouncing, so that fixing the configuration is enough to get the mail moving.
#
# Environment (pipe(8) passes almost none, so the defaults matter):
#   SPAMFILTER_MODEL    model directory (default /var/lib/spamfilter/model)
#   SPAMFILTER_TIMEOUT  seconds before the classifier is killed (default 60; needs timeout(1)
#                       from coreutils, else only pipe's own spamfilter_time_limit applies)
#   PATH                searched for spamfilter and sendmail; /usr/local/bin, /usr/bin, /bin and
#                       /usr/sbin are appended, so under Postfix `sendmail` is /usr/sbin/sendmail.

EX_TEMPFAIL=75

PATH=${PATH:+$PATH:}/usr/local/bin:/usr/bin:/bin:/usr/sbin
SPAMFILTER_MODEL=${SPAMFILTER_MODEL:-/var/lib/spamfilter/model}
SPAMFILTER_TIMEOUT=${SPAMFILTER_TIMEOUT:-60}
export PATH SPAMFILTER_MODEL

if [ $# -lt 4 ] || [ "$1" != "-f" ] || [ "$3" != "--" ]; then
    echo "postfix-filter: usage: $0 -f SENDER -- RECIPIENT..." >&2
    exit $EX_TEMPFAIL
fi
sender=$2
shift 3

# The tagged message goes to a file first: sendmail must see all of it or nothing, and a
# classifier that dies halfway must not have started a re-injection already.
tagged=$(mktemp "${TMPDIR:-/tmp}/spamfilter.XXXXXXXX") || exit $EX_TEMPFAIL
trap 'rm -f "$tagged"' EXIT
trap 'exit 75' HUP INT TERM

if command -v timeout >/dev/null 2>&1; then
    limit="timeout $SPAMFILTER_TIMEOUT"
else
    limit=
fi

# --strict: on any failure spamfilter writes nothing and exits 75 instead of passing the
# message through untagged; --format email: one RFC 822 message (pipe mode), whatever its first
# bytes look like; --quiet: no summary line in the mail log.
$limit spamfilter filter --format email --strict --quiet >"$tagged"
status=$?
if [ "$status" -ne 0 ]; then
    echo "postfix-filter: spamfilter failed (exit $status), message deferred" >&2
    exit $EX_TEMPFAIL
fi

# Re-inject. -G: a relayed message, not a new submission; -i: a line with a single "." is
# not the end of the message; -f: keep the envelope sender; --: recipients are never options.
# Never use -t here: it would take the recipients from the headers.
if ! sendmail -G -i -f "$sender" -- "$@" <"$tagged"; then
    echo "postfix-filter: re-injection with sendmail failed, message deferred" >&2
    exit $EX_TEMPFAIL
fi
exit 0
