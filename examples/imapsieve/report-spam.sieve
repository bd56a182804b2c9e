# IMAPSieve, a message copied or moved into Junk: teach spamfilter that it is spam, for the IMAP
# user who moved it (spamc -u). Installed as /etc/dovecot/sieve/report-spam.sieve by
# 95-imapsieve-spamfilter.conf; compile it with: sievec /etc/dovecot/sieve/report-spam.sieve
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];

if environment :matches "imap.user" "*" {
  set "username" "${1}";
}

# :copy leaves the message where it was put; :try: a failed report does not fail the move.
pipe :copy :try "spamfilter-learn" ["spam", "${username}"];
