# IMAPSieve, a message copied or moved out of Junk: teach spamfilter that it is ham, for the IMAP
# user who moved it (spamc -u), unless it went to Trash (deleting spam is not calling it ham).
# Installed as /etc/dovecot/sieve/report-ham.sieve by 95-imapsieve-spamfilter.conf; compile it
# with: sievec /etc/dovecot/sieve/report-ham.sieve
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];

if environment :matches "imap.mailbox" "*" {
  set "mailbox" "${1}";
}
if string "${mailbox}" ["Trash", "Junk"] {
  stop;
}

if environment :matches "imap.user" "*" {
  set "username" "${1}";
}

pipe :copy :try "spamfilter-learn" ["ham", "${username}"];
