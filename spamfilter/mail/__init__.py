"""Mail for the filter, one promise per module:

- ``headers``: header fields found in, inserted into and removed from raw bytes, every other byte
  kept (what the fields say is ``verdict``'s);
- ``text``: the text the model sees of an email, never raising, with bounded work; with
  ``render`` (HTML as a client shows it), ``normalise`` (Unicode disguises undone) and ``quotes``
  (quoted replies);
- ``mailboxes``: mbox streams, Maildirs, message folders and tar archives read as they are, and
  the input formats told apart.

Light imports only, on purpose (the standard library, lexbor's HTML parser and Unicode's
confusables data): this sits on the cold-start path of mail pipelines (procmail, maildrop,
``formail -s``), where importing torch or pandas would cost more than the classification.
"""

from __future__ import annotations

from .headers import SPAM_HEADER_NAMES, remove_spam_headers, replace_fields, spam_field_names
from .mailboxes import (
    check_sources,
    describe_skipped,
    detect_format,
    is_mbox_message,
    iter_mail_source,
    looks_like_csv,
    looks_like_email,
    looks_like_mbox,
    looks_like_message,
    mail_folder_files,
    split_mbox,
)
from .text import extract_text

__all__ = [
    "SPAM_HEADER_NAMES",
    "check_sources",
    "describe_skipped",
    "detect_format",
    "extract_text",
    "iter_mail_source",
    "looks_like_csv",
    "looks_like_email",
    "looks_like_mbox",
    "looks_like_message",
    "mail_folder_files",
    "remove_spam_headers",
    "replace_fields",
    "spam_field_names",
    "is_mbox_message",
    "split_mbox",
]
