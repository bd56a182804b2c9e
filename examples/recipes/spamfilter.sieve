# Dovecot (Pigeonhole) sieve: tag every message with spamfilter, file spam into "Junk".
#
# Needs the sieve_extprograms plugin and the vnd.dovecot.filter extension, configured as in
# 90-sieve-extprograms.conf next to this file, and the sieve-spamfilter wrapper installed as
# /usr/lib/dovecot/sieve-filter/spamfilter: the name given to `filter` below is looked up in
# sieve_filter_bin_dir, never on PATH. The extension is only enabled for global scripts, so
# run this one before the users' own scripts:
#     plugin { sieve_before = /etc/dovecot/sieve/spamfilter.sieve }
#     sievec /etc/dovecot/sieve/spamfilter.sieve      (compile it once, as root)
#
# Fail-safe: when the filter program fails, is killed by sieve_filter_exec_timeout or writes
# nothing, the `filter` action leaves the message unchanged and the script goes on (that is
# the extension's specified behaviour), so the message is delivered untagged. spamfilter is
# fail-safe on its own too: without a usable model it writes the message back unchanged.
# Message files are written by Dovecot itself, which does its own locking: nothing to lock.

require ["vnd.dovecot.filter", "fileinto", "mailbox"];

filter "spamfilter";

# spamfilter removes any X-Spam-Flag the sender put in before adding its own, so after a
# successful filter this header is the classifier's verdict. Comparison is case-insensitive.
if header :is "X-Spam-Flag" "YES" {
    fileinto :create "Junk";
    stop;
}
