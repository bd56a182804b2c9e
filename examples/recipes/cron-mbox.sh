#!/bin/sh
# Tag every message of an mbox with spamfilter, in place, from cron.
#
#     cron-mbox.sh MBOX [spamfilter filter options, e.g. --threshold 0.8]
#
# (Not --spam-output: moving spam out makes the result shorter than the mbox, which this script
# takes for a failure, and each run would copy the spam again.)
#
# Install: install -m 755 cron-mbox.sh ~/bin/ and add the line from `crontab` next to this
# file with `crontab -e`. Meant for mailboxes you own (~/Mail/inbox, a fetchmail/getmail
# target): the new file is created beside the mbox, so the script needs write access to its
# directory, which users do not have for the system spool (/var/mail); filter spool mail at
# delivery instead (procmailrc, mailfilter, spamfilter.sieve, postfix-master.cf).
#
# Never loses mail:
#   * The mailbox is locked the way mail tools lock it for the whole run: a dot-lock
#     (MBOX.lock, with procmail's lockfile(1) when installed) and flock(2) on the mbox
#     itself. Linux keeps flock() and fcntl() locks apart, so it is the dot-lock that keeps
#     out delivery agents and mail readers (Postfix local, procmail, maildrop, mutt) while
#     the flock keeps out flock() users and a second run of this script. The script refuses
#     to run when it can take neither lock.
#   * spamfilter writes the tagged mailbox to a temporary file in the same directory; only
#     when it succeeded, and the result is no shorter than the original (headers are only
#     added), is that file renamed over the mbox: rename(2) replaces it in one step, so a
#     crash, a full disk or a killed job leaves either the old or the new mailbox, never half
#     of one. Mail delivered while we waited for the lock is in the file we read, and none
#     can be delivered while we hold it.
#   * The new file gets the mbox's permissions, owner (when allowed) and timestamps, so mail
#     readers still see "new mail" where they did before.
#
# Tagging is idempotent: spamfilter replaces the X-Spam headers of a message tagged before,
# so a mailbox can be run through again (each run classifies every message again, though:
# with a large mailbox filter at delivery time instead).
#
# Environment:
#   SPAMFILTER_MODEL    model directory (spamfilter's default otherwise)
#   SPAMFILTER_TIMEOUT  seconds before spamfilter is killed (default 600; needs timeout(1))
#   LOCK_WAIT           seconds to wait for the locks (default 300)
# Exit codes: 0 done (or nothing to do), 75 could not lock or classify: nothing was changed,
# the next cron run tries again; 64 usage error.

EX_USAGE=64
EX_TEMPFAIL=75

PATH=${PATH:+$PATH:}/usr/local/bin:/usr/bin:/bin
export PATH
SPAMFILTER_TIMEOUT=${SPAMFILTER_TIMEOUT:-600}
LOCK_WAIT=${LOCK_WAIT:-300}

if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: $0 MBOX [spamfilter filter options]" >&2
    exit $EX_USAGE
fi
mbox=$1
shift
# Missing or empty: nothing to tag (some mail readers delete a mailbox once it is empty).
[ -s "$mbox" ] || exit 0
dir=$(dirname -- "$mbox")
base=$(basename -- "$mbox")

have() { command -v "$1" >/dev/null 2>&1; }
fail() {
    echo "cron-mbox: $*; $mbox left unchanged" >&2
    exit $EX_TEMPFAIL
}

dotlock=
refresher=
tmp=
cleanup() {
    [ -n "$refresher" ] && kill "$refresher" 2>/dev/null
    [ -n "$tmp" ] && rm -f -- "$tmp"
    [ -n "$dotlock" ] && rm -f -- "$dotlock"
}
trap cleanup EXIT
trap 'exit 75' HUP INT TERM

have lockfile || have flock || fail "neither lockfile(1) (procmail) nor flock(1) (util-linux) is installed"

# 1. Dot-lock, as procmail does: retry every second for LOCK_WAIT seconds; a MBOX.lock older
#    than 1024 s (procmail's LOCKTIMEOUT) is taken to be stale and removed. A background
#    loop touches ours while we work, so that nobody takes it for stale in a long run
#    (maildrop's LOCKTIMEOUT is only 60 s).
if have lockfile; then
    lockfile -1 -r "$LOCK_WAIT" -l 1024 "$mbox.lock" || fail "cannot dot-lock $mbox.lock"
    dotlock=$mbox.lock
    (while sleep 20; do touch -c -- "$dotlock" || exit; done) </dev/null >/dev/null 2>&1 &
    refresher=$!
fi

# 2. flock on the mbox. Another run may have renamed a new file over the mbox while we waited:
#    then our lock is on the old, unlinked file, so compare inodes and lock again if needed.
if have flock; then
    tries=0
    while :; do
        # `command`: a failed redirection must not end the shell before `fail` can report it.
        command exec 9<"$mbox" || fail "cannot open $mbox"
        flock -w "$LOCK_WAIT" 9 || fail "cannot flock $mbox"
        [ "$(stat -L -c %d:%i /dev/fd/9)" = "$(stat -c %d:%i -- "$mbox")" ] && break
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || fail "$mbox keeps being replaced"
    done
fi
[ -s "$mbox" ] || exit 0

# 3. Tag into a temporary file beside the mbox (same file system, so the rename is atomic).
tmp=$(mktemp "$dir/.$base.spamfilter.XXXXXXXX") || fail "cannot create a file in $dir"
chmod --reference="$mbox" -- "$tmp" || fail "cannot set the permissions of $tmp"
chown --reference="$mbox" -- "$tmp" 2>/dev/null || :
# Reading the mbox may update its access time: note both times before anyone reads it.
times=$(stat -c '%X %Y' -- "$mbox") || fail "cannot stat $mbox"
if have timeout; then
    limit="timeout $SPAMFILTER_TIMEOUT"
else
    limit=
fi
$limit spamfilter filter --format mbox --quiet "$@" --output "$tmp" -- "$mbox" ||
    fail "spamfilter failed (exit $?)"
[ "$(wc -c <"$tmp")" -ge "$(wc -c <"$mbox")" ] || fail "the tagged mailbox is shorter than $mbox"

# 4. Make it durable, then replace the mbox in one step.
touch -a -d "@${times% *}" -- "$tmp" && touch -m -d "@${times#* }" -- "$tmp" || :
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$mbox" || fail "cannot rename $tmp to $mbox"
tmp=
sync -- "$dir" 2>/dev/null || :
exit 0
