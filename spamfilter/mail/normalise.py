"""Unicode as a reader reads it: the disguises that change code points but not what is seen undone.

Spam writes "ｆｒｅｅ" in full-width letters, "v​i​a​g​r​a" with zero-width spaces between the
letters and "раураl" with Cyrillic letters that look Latin, so that a tokenizer sees rare tokens
where a reader sees common words. ``normalise`` applies, in order:

1. NFKC: compatibility forms (full-width, mathematical alphanumerics, ligatures) to plain letters;
2. removal of the combining marks that a Latin, Greek or Cyrillic letter (or a space) carries
   after NFKC has composed the accents it could: what is left is strike-through, stacked or
   enclosing marks and variation selectors, drawn over "v̶i̶a̶g̶r̶a̶" so that a reader still reads
   the word and a tokenizer does not (the scripts whose words are written with combining marks,
   Devanagari, Arabic, Hebrew and the rest, keep theirs);
3. a run after a right-to-left override (U+202E) reversed, as it is drawn ("won yub" after one
   is "buy now" on screen), then removal of format characters (Unicode category Cf: zero-width
   spaces and joiners, the soft hyphen, bidirectional controls, the byte-order mark, tag
   characters) and of the few invisible letters that are not Cf (the Hangul fillers, the
   combining grapheme joiner);
4. look-alikes mapped to the ASCII letters they imitate, from Unicode's confusables data (as
   shipped by the ``confusable-homoglyphs`` package), but only where the text is disguised Latin:
   in a word that mixes ASCII letters with look-alikes, and in any word of a text whose letters
   are mostly ASCII. A Russian or Greek message stays Russian or Greek;
5. a word spelled out letter by letter ("V I A G R A", "F.R.E.E", "c-a-s-h", or a word's letters
   in table cells, which the renderer separates by a space) joined into the word a reader reads:
   three single letters or more, separated alike; or four or more lines of one letter each (a
   word spelled down a table). Words stay apart where the spammer parted them
   otherwise ("F R E E  O F F E R" is "FREE  OFFER"); a text of ordinary words has no such run.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from importlib import resources

_INVISIBLE_LETTERS = "\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0\u2800"
_WORD = r"[^\W\d_]"  # a letter (or other alphanumeric that is not a digit)
_ASCII_LETTER = re.compile(r"[A-Za-z]")
_NON_ASCII = r"[^\W\d_\x00-\x7f]"  # a letter that is not ASCII
_NON_ASCII_LETTER = re.compile(_NON_ASCII)
# A whole word (a run of letters) with a non-ASCII letter in it. The look-behind starts a match
# only at a word's first letter (without it, a long ASCII run would be tried from every letter:
# quadratic), and the greedy tail takes it to the word's last.
_NON_ASCII_WORD = re.compile(rf"(?<!{_WORD}){_WORD}*{_NON_ASCII}{_WORD}*")
# Combining marks (diacritics, their supplement and extensions, marks for symbols, variation
# selectors, half marks) after a character below U+0530 (Latin, Greek, Cyrillic, punctuation,
# spaces) or in Latin/Greek Extended; the quantifier takes a whole stack of them.
_STRAY_MARKS = re.compile(
    r"(?<=[\x00-\u052f\u1e00-\u1fff])[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f]+"
)
# A right-to-left override's run: to its POP DIRECTIONAL FORMATTING, or the end of the line.
_OVERRIDDEN = re.compile(r"\u202e([^\u202c\n]*)\u202c?")
# Three or more single letters (none touching another letter or digit), each pair separated by the
# same white space, or by the same one of . - _ * | ~ + · • with as many spaces either side of it
# (a command line's "ls -l -a -t" has its dashes on one side: not a word).
_SPELLED_OUT = re.compile(
    r"\b[^\W\d_](?=[^\w\n])(?P<gap>[^\S\n]+|(?P<pad>[^\S\n]*)[-.*_|~+\u00b7\u2022](?P=pad))[^\W\d_]"
    r"(?:(?P=gap)[^\W\d_])+(?![^\W_])"
)
# A word spelled down the page: four or more lines of one letter each, the same line breaks
# between them (a table of one letter a row, or a letter after each <br>).
_SPELLED_DOWN = re.compile(r"(?m)^[^\W\d_](?P<gap>\n+)[^\W\d_]$(?:(?P=gap)^[^\W\d_]$){2,}")
_MOSTLY_ASCII = 0.5  # share of letters that must be ASCII for whole look-alike words to be mapped


def _invisible_characters(text: str) -> dict[int, None]:
    """A str.translate table deleting the Cf characters and invisible letters that ``text`` holds:
    built from the text's distinct characters, not from every code point (a table of all of them
    cost each new process a tenth of a second, and pipeline mode starts one per message)."""
    return {
        ord(c): None
        for c in set(text)
        if not c.isascii() and (c in _INVISIBLE_LETTERS or unicodedata.category(c) == "Cf")
    }


@functools.cache
def _look_alikes() -> dict[int, str]:
    """A str.translate table from every non-ASCII letter that Unicode lists as confusable with
    an ASCII letter to that letter (the data is symmetric: each entry lists its homoglyphs)."""
    source = resources.files("confusable_homoglyphs").joinpath("confusables.json")
    data = json.loads(source.read_text("utf-8"))
    table: dict[int, str] = {}
    for character, glyphs in data.items():
        if len(character) != 1 or character.isascii() or not character.isalpha():
            continue
        targets = [glyph.get("c", "") for glyph in glyphs]
        targets = [t for t in targets if len(t) == 1 and t.isascii() and t.isalpha()]
        if not targets:
            continue
        same_case = [t for t in targets if t.isupper() == character.isupper()]
        target = (same_case or targets)[0]
        # A plain vertical stroke: Unicode's skeleton files Cyrillic "І" under "l" and the
        # palochka "ӏ" under "i"; a reader sees "I" among capitals and "l" among small letters.
        if target in "lI" or "PALOCHKA" in unicodedata.name(character, ""):
            target = "I" if character.isupper() else "l"
        table[ord(character)] = target
    return table


def _unmask_words(text: str) -> str:
    table = _look_alikes()

    def unmask_mixed(match: re.Match[str]) -> str:
        word = match.group(0)
        if not any(c.isascii() for c in word):
            return word
        return word.translate(table)  # ASCII letters beside look-alikes: disguised Latin

    # Only words with a non-ASCII letter can change: the rest are left to the C-level search.
    text = _NON_ASCII_WORD.sub(unmask_mixed, text)
    others = len(_NON_ASCII_LETTER.findall(text))
    latin = len(_ASCII_LETTER.findall(text))
    if not others or latin / (latin + others) < _MOSTLY_ASCII:
        return text  # a Russian or Greek text (or no look-alike left): its words are its own

    def unmask_whole(match: re.Match[str]) -> str:
        mapped = match.group(0).translate(table)
        return mapped if mapped.isascii() else match.group(0)

    return _NON_ASCII_WORD.sub(unmask_whole, text)


def _join_spelled_out(text: str) -> str:
    def letters(run: re.Match[str]) -> str:
        return "".join(c for c in run.group(0) if c.isalpha())

    if "\n" in text:
        text = _SPELLED_DOWN.sub(letters, text)
    return _SPELLED_OUT.sub(letters, text)


def normalise(text: str) -> str:
    """``text`` with compatibility forms folded, invisible characters removed, Latin look-alikes
    unmasked and words spelled out letter by letter joined (see the module's documentation)."""
    if text.isascii():
        return _join_spelled_out(text)
    return _join_spelled_out(_unicode_normalised(text))


def _unicode_normalised(text: str) -> str:
    text = _STRAY_MARKS.sub("", unicodedata.normalize("NFKC", text))
    if "\u202e" in text:  # RIGHT-TO-LEFT OVERRIDE: what follows is drawn right to left
        text = _OVERRIDDEN.sub(lambda run: run.group(1)[::-1], text)
    text = text.translate(_invisible_characters(text))
    if _NON_ASCII_LETTER.search(text) is None:
        return text  # nothing a look-alike could be: the confusables table is not even loaded
    return _unmask_words(text)
