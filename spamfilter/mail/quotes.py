"""Quoted text: what a reply repeats of earlier mail does not decide the verdict.

A reply that quotes a spam ("is this spam? > WIN A PRIZE...") is the writer's own words, not the
spam; a spam that opens with a quoted paragraph of ordinary mail ("> Thanks for the minutes of
Tuesday's meeting...") is still the spam that follows. Both come out right when quoted lines are
left out of what the model reads, as long as the writer wrote at least MIN_OWN_WORDS words of
their own; a message that is all quotation (a forward without a word) is read whole. The gap this
leaves: a spam sent as `>` lines under a sentence of its own is judged by that sentence. Reading the
quotation whenever it outweighs the writer's words (a quarter of them) closed it, but marked 51 % of
ham replies quoting a spam as spam (9.6 % without) and raised the top scores of mailing-list ham,
whose replies quote at length (benchmarks/RESULTS.md section 12).

Quoted lines are those starting with ``>`` (after optional spaces), in plain text and in HTML
quotations (``<blockquote type="cite">`` and the common webmail quote classes), which
:mod:`.render` turns into ``>`` lines; HTML's own text that begins with ``>`` (``&gt;&gt; offer``)
is no quotation in any client, and render marks it so that it is kept. An attribution line ending
in "wrote:" just before a quotation goes with it.
"""

from __future__ import annotations

import re

MIN_OWN_WORDS = 5  # words of the writer's own below which the quotation is read too
# ">From " is mbox's escape of a line that starts with "From ", not a quotation.
_QUOTED = re.compile(r"^[ \t]*>(?!>*From )")
_ATTRIBUTION = re.compile(r"(wrote|writes|schrieb|a écrit|escribió|scrisse):\s*$", re.IGNORECASE)
_WORD = re.compile(r"\w{2,}")


def drop_quoted(text: str) -> str:
    """``text`` without its quoted lines, or unchanged when fewer than MIN_OWN_WORDS words of
    its own would remain (see the module's documentation)."""
    if ">" not in text:
        return text
    lines = text.split("\n")
    keep = [not _QUOTED.match(line) for line in lines]
    if all(keep):
        return text
    for i, line in enumerate(lines[:-1]):
        if keep[i] and _ATTRIBUTION.search(line):
            following = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
            if following is not None and not keep[following]:
                keep[i] = False  # "On Tuesday, Ann wrote:" (blank lines may follow) then the quote
    own = [line for line, kept in zip(lines, keep, strict=True) if kept]
    if len(_WORD.findall("\n".join(own))) < MIN_OWN_WORDS:
        return text
    return re.sub(r"\n{3,}", "\n\n", "\n".join(own)).strip("\n")
