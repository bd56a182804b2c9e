"""The ``<style>`` rules of a message, cascaded as a browser cascades them, as far as they decide what
a reader sees.

Hiding text with a rule is no harder for a spammer than hiding it with a ``style`` attribute, and
a rule that is applied where a mail client would not apply it is worse than none: text that the
client shows and the filter does not read. ``<style>.x{display:none}</style><p class=x
style="display:block">offer</p>`` shows the offer (the attribute wins), and so does ``p.x
{display:block} .x {display:none}`` (the more specific rule wins, whatever the order). So the
declarations of an element are found as CSS finds them: every rule whose selector matches it,
ordered by specificity and then by order, its ``style`` attribute over them, and ``!important``
declarations of the rules over that.

Selectors: type, class, id, attribute (``[a]``, ``[a=v]``, ``~=``, ``^=``, ``$=``, ``*=``,
``|=``) and the universal selector, joined by the descendant and child combinators. A selector
with anything else (pseudo-classes, sibling combinators) is not applied; a rule whose list holds
one selector a browser cannot read (an unknown pseudo-class, ``.o, .o:-zz-x``) is dropped whole, as
browsers drop it (``<!--`` and ``-->`` around a sheet are ignored, as in CSS); nor are rules whose
subject is ``html``, ``body`` or ``*`` alone (many mail clients drop those; a filter that applied
``body{display:none}`` would read nothing of a message every client shows; where such a rule
sets a background, the page's colour is unknown: ``colours_page``). Rules for
``::before`` and ``::after`` are kept apart: their ``content`` is text a client draws.

``@media`` blocks apply in the views their queries match (``VIEW_WIDTHS``: a desktop's window and
a phone's; print, speech and the dark scheme in neither), so that an element is styled per view
and its text counts as seen where either view shows it; a block whose condition is not decided
here (``@supports``, ``@container``, media features other than widths and the colour scheme)
applies in the phone's view alone, so that a client may draw either way and the text is read;
``@font-face``, ``@keyframes`` and ``@page`` hold no rules for elements.

Bounds: ``MAX_RULES`` rules of at most ``MAX_STYLE_CHARS`` of style text; an element meets only
the rules indexed under its tag, classes, id and attribute names (a dictionary look-up each); the
rules tried and the ancestors visited to match combinators are counted per message
(``MAX_MATCH_STEPS``, 300 times the most that any message of the SpamAssassin corpus needs), and
past that count no rule is applied (the elements' own ``style`` attributes still are). So a
stylesheet cannot make the walk of a message cost more than its size times a constant (256
universal rules over 8,192 elements took 0.7 s a message before the count). Custom properties
are resolved within ``MAX_VARIABLE_CHARS`` characters of substitution per message
(:class:`VariableBudget`); past it a value still holding ``var()`` is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

MAX_RULES = 256  # rules read per message: mail templates use tens
MAX_STYLE_CHARS = 100_000  # of all <style> text looked at
MAX_SELECTOR_CHARS = 200
MAX_MATCH_STEPS = 100_000  # rules tried and ancestors visited per message
_MAX_RULE_SELECTOR_CHARS = 2000  # of the text before a rule's "{" read as its selectors
_MAX_DECLARATION_CHARS = 4000

# A number read one way (digits, then a fraction): "[0-9]*\.?[0-9]+" split a run of digits every
# way there is, n² steps on a 4,000-digit value, a minute for a message of 400 of them.
LENGTH = re.compile(r"^(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*(px|pt|em|rem|%|ex|ch|vw|vh|cm|mm|in)?$")
_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.DOTALL)  # an unclosed comment runs to the end
_MARKUP_OF_VALUES = ("\\", '"', "'", "(", "[", "{")  # without them a block splits at every ";"
_VALUE_TOKEN = re.compile(
    r"\\.|\"(?:[^\"\\]|\\.)*\"?|'(?:[^'\\]|\\.)*'?|[;()\[\]{}]|[^;()\[\]{}\\\"']+", re.DOTALL
)
# A name of word characters and escapes: each character has one reading (no backtracking on a
# hostile name of thousands of escapes); what it spells is checked once it is decoded.
_NAME_VALUE = re.compile(r"\s*((?:[\w-]|\\.)+)\s*:(.*)", re.DOTALL)
_IDENTIFIER = re.compile(r"-?[a-zA-Z_][\w-]*")
# var(--name) or var(--name, fallback): a fallback of text and one level of brackets, each
# character read one way (brackets delimit the pieces)
_VARIABLE = re.compile(r"var\(\s*(--[\w-]+)\s*(?:,([^()]*(?:\([^()]*\)[^()]*)*))?\)", re.IGNORECASE)
_MAX_VARIABLE_DEPTH = 4
MAX_VARIABLES = 64  # custom properties in effect for an element: templates use a handful
# characters of values scanned and written by var() substitution per message (VariableBudget)
MAX_VARIABLE_CHARS = 1_000_000
_IMPORTANT = re.compile(r"!\s*important", re.IGNORECASE)
_COMPOUND = re.compile(
    r"(\*|[a-zA-Z][a-zA-Z0-9-]*)?"
    r"((?:[.#][\w-]+|\[\s*[\w-]+\s*(?:[~|^$*]?=\s*(?:\"[^\"]*\"|'[^']*'|[\w-]+)\s*(?:[iI]\s*)?)?\])*)"
)
_PART = re.compile(
    r"([.#])([\w-]+)|\[\s*([\w-]+)\s*(?:([~|^$*]?=)\s*(?:\"([^\"]*)\"|'([^']*)'|([\w-]+))\s*([iI])?\s*)?\]"
)
_COMBINATOR = re.compile(r"\s*>\s*|\s+")
_GENERATED = re.compile(r"::?(before|after)\s*$", re.IGNORECASE)
_CONTENT = re.compile(r"\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)'|attr\(\s*([\w-]+)\s*\)", re.DOTALL)
_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)", re.DOTALL)
_IGNORED_SUBJECTS = frozenset({"html", "body"})
_PAGE = re.compile(r"\s*(?:html|body|:root|\*)\s*$", re.IGNORECASE)  # a rule for the whole page


def declarations(style: str) -> tuple[dict[str, str], frozenset[str]]:
    """A declaration block's properties (names and values lower case, CSS escapes decoded,
    ``!important`` taken off) and the names of those marked ``!important``.

    Read as a browser reads it, because every difference is a way past the filter: comments are
    no text (``/* ; display:none ; */ color:red`` shows the element), a declaration ends at a
    ``;`` outside strings, brackets and escapes, and one that is not ``name: value`` is dropped
    whole (``x display:none`` hides nothing); ``n\\6f ne`` is ``none``, and ``none\\;`` is not."""
    found: dict[str, str] = {}
    important: set[str] = set()
    if not style:
        return found, frozenset()
    style = style[:_MAX_DECLARATION_CHARS]
    if "/*" in style:
        style = _COMMENT.sub("", style)
    plain = not any(mark in style for mark in _MARKUP_OF_VALUES)
    for piece in style.split(";") if plain else _top_level_pieces(style):
        declaration = _NAME_VALUE.match(piece)
        if declaration is None:
            continue
        name, value = declaration.group(1), declaration.group(2)
        if "\\" in name:
            name = _ESCAPE.sub(_unescape, name)
        custom = name.startswith("--") and len(name) > 2  # a custom property, for var()
        if not custom and not _IDENTIFIER.fullmatch(name):
            continue  # "9x: ..." and the like: dropped
        name = name.lower()
        if _IMPORTANT.search(value):
            important.add(name)
            value = _IMPORTANT.sub("", value)
        if name == "content":
            found[name] = value.strip()  # text keeps its case and its escapes (generated_text decodes them)
            continue
        if "\\" in value:
            value = _ESCAPE.sub(_unescape, value)
        found[name] = value.strip() if custom else value.strip().lower()
    return found, frozenset(important)


class VariableBudget:
    """What ``var()`` substitution may still cost in one message: characters of values scanned
    and written (``MAX_VARIABLE_CHARS``). Each element re-resolves the custom properties it
    declares, against the values it inherits: 60 properties of 4,000 characters, each naming
    itself and an unknown one, re-expanded on every one of 200 elements took 12 s for a message of
    3 KB. Past the budget nothing more is substituted: a value that still holds a ``var()`` is
    dropped, as one naming an unknown property is (what it would hide is read)."""

    __slots__ = ("left",)

    def __init__(self, chars: int = MAX_VARIABLE_CHARS) -> None:
        self.left = chars


def with_variables(
    found: dict[str, str], inherited: Mapping[str, str], budget: VariableBudget | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """An element's declarations with each ``var(--name, fallback)`` replaced, and the custom
    properties in effect for it and what it holds (its own over its ancestors': they are
    inherited). A value that still names an unknown property without a fallback is dropped, as a
    browser drops it at computed-value time (the property is then as if unset); so is one left
    unresolved once the message's ``budget`` is spent."""
    budget = budget if budget is not None else VariableBudget()
    variables = dict(inherited)
    for name, value in found.items():
        if name.startswith("--") and (name in variables or len(variables) < MAX_VARIABLES):
            variables[name] = _substituted(value, variables, budget)
    resolved: dict[str, str] = {}
    for name, value in found.items():
        if name.startswith("--"):
            continue
        if "var(" in value:
            value = _substituted(value, variables, budget)
            if "var(" in value:
                continue
            value = value if name == "content" else value.lower()
        resolved[name] = value
    return resolved, variables


def _substituted(value: str, variables: Mapping[str, str], budget: VariableBudget) -> str:
    def one(match: re.Match[str]) -> str:
        known = variables.get(match.group(1).lower())
        if known is not None:
            return known
        return match.group(2).strip() if match.group(2) is not None else match.group(0)

    for _ in range(_MAX_VARIABLE_DEPTH):  # a fallback may itself name a property
        if "var(" not in value or budget.left <= 0:
            break
        before = len(value)
        value = _VARIABLE.sub(one, value)[:_MAX_DECLARATION_CHARS]
        budget.left -= before + len(value)
    return value


def _top_level_pieces(style: str) -> list[str]:
    """``style`` split at the semicolons outside strings, brackets and escapes."""
    pieces: list[str] = []
    current: list[str] = []
    depth = 0
    for token in _VALUE_TOKEN.findall(style):
        if token == ";" and depth == 0:
            pieces.append("".join(current))
            current = []
            continue
        if token in ("(", "[", "{"):
            depth += 1
        elif token in (")", "]", "}"):
            depth = max(0, depth - 1)
        current.append(token)
    pieces.append("".join(current))
    return pieces


def _unescape(match: re.Match[str]) -> str:
    if match.group(1) is None:
        return match.group(2)
    code = int(match.group(1), 16)
    return chr(code) if 0 < code < 0x110000 and not 0xD800 <= code < 0xE000 else "\ufffd"


def generated_text(content: str, attributes: Mapping[str, str | None]) -> str:
    """The text a ``content`` declaration draws: its strings (CSS escapes decoded) and the
    ``attr()`` values it names; nothing for ``none``, ``normal``, counters and pictures."""

    pieces = []
    for found in _CONTENT.finditer(content[:_MAX_DECLARATION_CHARS]):
        if found.group(3) is not None:
            pieces.append(attributes.get(found.group(3).lower()) or "")
        else:
            pieces.append(
                _ESCAPE.sub(_unescape, found.group(1) if found.group(1) is not None else found.group(2))
            )
    return "".join(pieces)


@dataclass(frozen=True)
class Element:
    """What selectors see of an element: its tag, its attributes, and its parent's the same way."""

    tag: str
    attributes: Mapping[str, str | None]
    parent: Element | None = None
    classes: frozenset[str] = field(init=False)
    ident: str | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", frozenset((self.attributes.get("class") or "").split()))
        object.__setattr__(self, "ident", self.attributes.get("id"))


@dataclass(frozen=True)
class _Attribute:
    name: str
    operator: str  # "" (present), "=", "~=", "^=", "$=", "*=", "|="
    value: str
    ignore_case: bool

    def matches(self, attributes: Mapping[str, str | None]) -> bool:
        if self.name not in attributes:
            return False
        if not self.operator:
            return True
        found, wanted = attributes[self.name] or "", self.value
        if self.ignore_case:
            found, wanted = found.lower(), wanted.lower()
        if self.operator == "=":
            return found == wanted
        if self.operator == "~=":
            return wanted in found.split()
        if self.operator == "|=":
            return found == wanted or found.startswith(wanted + "-")
        if not wanted:
            return False  # [a^=""] and the like match nothing
        if self.operator == "^=":
            return found.startswith(wanted)
        if self.operator == "$=":
            return found.endswith(wanted)
        return wanted in found  # "*="


@dataclass(frozen=True)
class _Compound:
    """One compound selector: ``p.a.b#x[data-h]``; ``tag`` None for any element."""

    tag: str | None
    classes: frozenset[str]
    ident: str | None
    attributes: tuple[_Attribute, ...]

    def matches(self, element: Element) -> bool:
        return (
            (self.tag is None or self.tag == element.tag)
            and self.classes <= element.classes
            and (self.ident is None or self.ident == element.ident)
            and all(attribute.matches(element.attributes) for attribute in self.attributes)
        )

    @property
    def key(self) -> str:
        """Where the compound is indexed: an element meets it under one of its own keys."""
        if self.ident:
            return f"#{self.ident}"
        if self.classes:
            return f".{min(self.classes)}"
        if self.attributes:
            return f"[{self.attributes[0].name}"
        return self.tag or "*"


def _compound(match: re.Match[str]) -> _Compound:
    classes, idents, attributes = set(), [], []
    for part in _PART.finditer(match.group(2) or ""):
        if part.group(1) == ".":
            classes.add(part.group(2))
        elif part.group(1) == "#":
            idents.append(part.group(2))
        else:
            value = next((v for v in (part.group(5), part.group(6), part.group(7)) if v is not None), "")
            name, operator = part.group(3).lower(), part.group(4) or ""
            attributes.append(_Attribute(name, operator, value, bool(part.group(8))))
    tag = (match.group(1) or "*").lower()
    ident = idents[0] if len(set(idents)) == 1 else (None if not idents else "\x00")  # #a#b: nothing
    return _Compound(None if tag == "*" else tag, frozenset(classes), ident, tuple(attributes))


def _parse_selector(text: str) -> tuple[_Compound, tuple[tuple[str, _Compound], ...], str] | None:
    """A selector's subject, its context (combinator and compound, nearest first) and its
    pseudo-element ("before", "after" or ""); None for a selector this module does not apply."""
    if not text or len(text) > MAX_SELECTOR_CHARS:
        return None
    generated = _GENERATED.search(text)
    pseudo = ""
    if generated is not None:
        pseudo, text = generated.group(1).lower(), text[: generated.start()]
    compounds: list[_Compound] = []
    combinators: list[str] = []
    at = 0
    while True:
        match = _COMPOUND.match(text, at)
        if match is None or match.end() == at:
            return None  # a pseudo-class, a sibling combinator, a namespace: not applied
        compounds.append(_compound(match))
        at = match.end()
        if at == len(text):
            break
        joint = _COMBINATOR.match(text, at)
        if joint is None:
            return None
        combinators.append(">" if ">" in joint.group(0) else " ")
        at = joint.end()
    subject = compounds[-1]
    if subject.tag in _IGNORED_SUBJECTS or (
        len(compounds) == 1 and subject == _Compound(None, frozenset(), None, ())
    ):
        return None
    context = tuple(zip(reversed(combinators), reversed(compounds[:-1]), strict=True))
    return subject, context, pseudo


def _specificity(subject: _Compound, context: tuple[tuple[str, _Compound], ...]) -> tuple[int, int, int]:
    compounds = [subject, *(compound for _, compound in context)]
    return (
        sum(compound.ident is not None for compound in compounds),
        sum(len(compound.classes) + len(compound.attributes) for compound in compounds),
        sum(compound.tag is not None for compound in compounds),
    )


@dataclass(frozen=True)
class _Rule:
    subject: _Compound
    context: tuple[tuple[str, _Compound], ...]
    rank: tuple[tuple[int, int, int], int]  # specificity, then order in the sheets
    normal: dict[str, str]
    important: dict[str, str]
    views: int  # the views it applies in (a bit each, VIEW_WIDTHS)


# The views a message is read in: a desktop client's window and a phone's. ``@media`` blocks apply to
# the views their queries match; an element counts as seen if either view shows it (a spammer who
# shows the offer only on phones is read, and so is one who shows it only on desktops).
VIEW_WIDTHS = (1280.0, 375.0)
ALL_VIEWS = (1 << len(VIEW_WIDTHS)) - 1
_AT_GROUPS = frozenset({"media", "supports", "layer", "container", "document"})
_FEATURE = re.compile(r"\(\s*([a-z-]+)\s*(?::\s*([^)]*))?\)")
_OTHER_MEDIA = re.compile(r"\b(print|speech|aural|braille|embossed|projection|tty|tv)\b")


def _query_matches(query: str, width: float) -> bool:
    """Whether one media query (no commas) matches a colour screen ``width`` pixels wide, in the
    light scheme. Features this module does not know are taken to match."""
    query = query.strip().lower()
    negated = query.startswith("not ")
    if negated:
        query = query[4:]
    matches = not _OTHER_MEDIA.search(query.split("(")[0])
    for name, value in _FEATURE.findall(query):
        length = pixels(value or "")
        if name in ("max-width", "max-device-width") and length is not None:
            matches = matches and width <= length
        elif name in ("min-width", "min-device-width") and length is not None:
            matches = matches and width >= length
        elif name == "prefers-color-scheme":
            matches = matches and value.strip() != "dark"
    return matches != negated


def pixels(value: str) -> float | None:
    """A CSS length in pixels (roughly: 1pt is 4/3 px, 1em 16 px), or None for anything else."""
    match = LENGTH.match(value.strip())
    if match is None:
        return None
    number, unit = float(match.group(1)), match.group(2) or "px"
    scale = {"pt": 4 / 3, "em": 16, "rem": 16, "ex": 8, "ch": 8, "%": 0.16, "cm": 38, "mm": 3.8, "in": 96}
    return number * scale.get(unit, 1.0)


_KNOWN_FEATURES = frozenset(
    {"width", "max-width", "min-width", "device-width", "max-device-width", "min-device-width"}
    | {"prefers-color-scheme"}
)
_UNSURE = 1 << (len(VIEW_WIDTHS) - 1)  # the phone's view alone: see _views


def _views(prelude: str) -> int:
    """The views (a bit each) in which the rules of an ``@`` block apply: ``@media`` by its queries,
    ``@layer`` in all, the rest (``@font-face``, ``@keyframes``, ``@page``) in none: what they hold
    are not rules for elements.

    A block whose condition this module cannot decide (``@supports``, ``@container``, a media
    feature other than widths and the colour scheme: ``(min-resolution: 9999dpi)``) applies in one
    view only, so that what it hides counts as seen in the other and what it shows counts as seen
    in this one: either way a client may draw, is read."""
    keyword, _, query = prelude[1:].partition(" ")
    keyword = keyword.lower()
    if keyword != "media":
        if keyword == "layer":
            return ALL_VIEWS
        return _UNSURE if keyword in _AT_GROUPS else 0
    mask = 0
    for bit, width in enumerate(VIEW_WIDTHS):
        if any(_query_matches(part, width) for part in query.split(",")):
            mask |= 1 << bit
    unsure = any(name not in _KNOWN_FEATURES for name, _ in _FEATURE.findall(query.lower()))
    return _UNSURE if unsure and mask == ALL_VIEWS else mask


def media_views(query: str) -> int:
    """The views (a bit each) that a ``media`` attribute's query list matches (as ``@media``)."""
    return _views(f"@media {query}")


def _blocks(sheets: str, base: int = ALL_VIEWS) -> Iterator[tuple[str, str, int]]:
    """(selectors, declarations, views) of each ``selectors { declarations }`` rule, in one pass
    over the braces: the selectors are at most the last ``_MAX_RULE_SELECTOR_CHARS`` characters
    before a rule's ``{``, the views those of the ``@media`` blocks around it (within ``base``,
    the views of the sheet: its ``media`` attribute's). (A regular
    expression that tried a selector of up to 2,000 characters at every offset took 1.6 s on a
    stylesheet of 100,000 characters without a brace.)"""
    groups: list[int] = []  # the views of each open @-block
    rule: tuple[str, int] | None = None  # the open rule's selectors and where its body starts
    since = 0  # where the text before the next "{" starts
    for brace in re.finditer(r"[{};]", sheets):
        at, mark = brace.start(), brace.group()
        if mark == ";":
            if rule is None:
                since = at + 1  # "@import ...;" and "@charset ...;" end here
            continue
        if mark == "{":
            prelude = sheets[max(since, at - _MAX_RULE_SELECTOR_CHARS) : at].strip()
            if rule is not None:  # a brace inside a rule's body: a nested block, read as a rule
                groups.append(groups[-1] if groups else base)
            if prelude.startswith("@"):
                outer = groups[-1] if groups else base
                groups.append(outer & _views(prelude))
                rule = None
            else:
                rule = (prelude, at + 1)
        elif rule is not None:  # "}" ends a rule
            views = groups[-1] if groups else base
            if rule[0] and views:
                yield rule[0], sheets[rule[1] : at], views
            rule = None
        elif groups:  # "}" ends an @-block
            groups.pop()
        since = at + 1


def _rules_of(sheets: str | list[tuple[str, int]]) -> Iterator[tuple[str, str, int]]:
    """The rules of each sheet in turn (``_blocks``), all sheets within ``MAX_STYLE_CHARS``."""
    left = MAX_STYLE_CHARS
    for text, views in [(sheets, ALL_VIEWS)] if isinstance(sheets, str) else sheets:
        text = text[:left]
        left -= len(text)
        # an unclosed comment runs to the end (as in a browser), in one match: a pattern that
        # needed the "*/" scanned to the end from every "/*", 20 s for a sheet of 33,000 of them;
        # "<!--" and "-->" around a sheet (as old browsers needed) are no part of its rules
        text = _COMMENT.sub("", text).replace("<!--", " ").replace("-->", " ")
        yield from _blocks(text, views)
        if left <= 0:
            break


def _selector_list(selectors: str) -> list[str]:
    """A rule's selectors, split at the commas outside brackets (``:is(a, b)`` is one)."""
    if "(" not in selectors and "[" not in selectors:
        return [text.strip() for text in selectors.split(",")]
    texts, depth, start = [], 0, 0
    for at, character in enumerate(selectors):
        if character in "([":
            depth += 1
        elif character in ")]":
            depth = max(0, depth - 1)
        elif character == "," and depth == 0:
            texts.append(selectors[start:at].strip())
            start = at + 1
    texts.append(selectors[start:].strip())
    return texts


# The pseudo-classes and pseudo-elements that both Chrome and Firefox read; a selector with any
# other (a vendor's own, a misspelling) is invalid in one of them, which then drops the whole rule,
# and text that the rule hides is shown there.
_PSEUDO_CLASSES = frozenset(
    {
        *("hover", "active", "focus", "focus-within", "focus-visible", "visited", "link", "any-link"),
        *("first-child", "last-child", "only-child", "first-of-type", "last-of-type", "only-of-type"),
        *("root", "empty", "checked", "disabled", "enabled", "target", "required", "optional"),
        *("read-only", "read-write", "placeholder-shown", "default", "indeterminate", "valid"),
        *("invalid", "in-range", "out-of-range", "defined", "autofill", "scope", "fullscreen"),
        *("modal", "popover-open", "user-invalid", "user-valid", "host"),
        *("not(", "is(", "where(", "has(", "nth-child(", "nth-last-child(", "nth-of-type("),
        *("nth-last-of-type(", "lang(", "dir(", "host("),
        # vendors' own that both read (Firefox reads -webkit-autofill as an alias since 86)
        *("-webkit-autofill", "-webkit-any-link", "-moz-focusring", "-moz-placeholder"),
        *("before", "after", "first-line", "first-letter"),  # pseudo-elements of CSS 2, one colon
    }
)
_PSEUDO_ELEMENTS = frozenset(
    {
        *("before", "after", "first-line", "first-letter", "selection", "placeholder", "marker"),
        *("backdrop", "file-selector-button", "cue", "cue(", "part(", "slotted(", "highlight("),
    }
)
_SELECTOR_PIECE = re.compile(
    r"""\s*[>+~]\s*|\s+|\*|[.#]?-?-?[^\W\d][\w-]*|\[(?:[^\]"']|"[^"]*"|'[^']*')*\]|(::?)(-?-?[^\W\d][\w-]*)(\()?"""
)


def _valid_selector(text: str) -> bool:
    """Whether a browser reads ``text`` as a selector: compounds of names, classes, ids, attributes
    and known pseudo-classes joined by combinators. Selectors with escapes or namespaces are taken
    as valid unchecked (a browser's reading of them is not repeated here)."""
    if not text or text[0] in ">+~" or text[-1] in ">+~,":
        return False
    if "\\" in text or "|" in text.replace("|=", ""):
        return True
    at = 0
    while at < len(text):
        piece = _SELECTOR_PIECE.match(text, at)
        if piece is None or piece.end() == at:
            return False
        at = piece.end()
        if piece.group(1) is None:
            continue
        name = piece.group(2).lower()
        if piece.group(3):  # a function: its arguments to the matching bracket
            name += "("
            depth = 1
            while at < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[at], 0)
                at += 1
            if depth:
                return False
        if name not in (_PSEUDO_ELEMENTS if piece.group(1) == "::" else _PSEUDO_CLASSES):
            return False
    return True


def _cascade(rules: list[_Rule], own: dict[str, str], own_important: frozenset[str]) -> dict[str, str]:
    if not rules:
        return own
    cascaded: dict[str, str] = {}
    for rule in rules:
        cascaded.update(rule.normal)
    cascaded.update(own)
    for rule in rules:
        cascaded.update({k: v for k, v in rule.important.items() if k not in own_important})
    return cascaded


class StyleSheet:
    """The rules of a message's ``<style>`` elements, ready to be matched while its tree is walked:
    one sheet's text, or each sheet's text and the views it applies in (its ``media``), read apart
    as a browser reads them (an unclosed block or comment in one does not swallow the next)."""

    def __init__(self, sheets: str | list[tuple[str, int]]) -> None:
        self._by_key: dict[str, list[_Rule]] = {}
        # ::before and ::after rules by pseudo-element, indexed as the element rules are
        self._generated: dict[str, dict[str, list[_Rule]]] = {"before": {}, "after": {}}
        self._steps = MAX_MATCH_STEPS
        order = 0
        self.views_differ = False  # whether any rule applies in some views only
        self.colours_page = False  # whether a rule for the page (html, body, :root, *) sets a background
        for count, (selectors, body, views) in enumerate(_rules_of(sheets)):
            if count >= MAX_RULES:
                break
            found, important = declarations(body)
            if not found:
                continue
            texts = _selector_list(selectors)
            if not all(_valid_selector(text) for text in texts):
                continue  # one selector a browser cannot read drops the whole rule
            normal = {name: value for name, value in found.items() if name not in important}
            strong = {name: value for name, value in found.items() if name in important}
            for text in texts:
                parsed = _parse_selector(text.strip())
                if parsed is None:
                    if _PAGE.match(text) and any(name.startswith("background") for name in found):
                        self.colours_page = True
                    continue
                subject, context, pseudo = parsed
                order += 1
                rule = _Rule(subject, context, (_specificity(subject, context), order), normal, strong, views)
                index = self._generated[pseudo] if pseudo else self._by_key
                index.setdefault(subject.key, []).append(rule)
                self.views_differ = self.views_differ or views != ALL_VIEWS
        self.generates = any(self._generated.values())  # whether any rule draws text of its own

    def __bool__(self) -> bool:
        return bool(self._by_key) or self.generates

    def styles(self, element: Element, inline: str) -> tuple[dict[str, str], ...]:
        """The element's declarations in each view (one, where no rule depends on the view): its
        matching rules' by specificity and order, its ``style`` attribute (``inline``) over them,
        the rules' ``!important`` ones over that."""
        own, own_important = declarations(inline)
        rules = self._matching(element, self._by_key)
        return tuple(
            _cascade([rule for rule in rules if rule.views >> view & 1], own, own_important)
            for view in range(len(VIEW_WIDTHS) if self.views_differ else 1)
        )

    def generated(self, element: Element, pseudo: str) -> tuple[dict[str, str], ...]:
        """The declarations of the element's ``::before`` or ``::after`` in each view (empty: none)."""
        rules = self._matching(element, self._generated[pseudo]) if self._generated[pseudo] else []
        return tuple(
            _cascade([rule for rule in rules if rule.views >> view & 1], {}, frozenset())
            for view in range(len(VIEW_WIDTHS) if self.views_differ else 1)
        )

    def _matching(self, element: Element, index: dict[str, list[_Rule]]) -> list[_Rule]:
        """The rules of ``index`` that match the element, by specificity and order (none once the
        message's bound is reached)."""
        if not index or self._steps < 0:
            return []
        keys = [element.tag, "*", *(f".{name}" for name in element.classes)]
        keys += [f"#{element.ident}"] if element.ident else []
        keys += [f"[{name}" for name in element.attributes]
        rules = []
        for key in dict.fromkeys(keys):
            for rule in index.get(key, ()):
                self._steps -= 1
                if self._steps < 0:
                    return []  # past the message's bound: no rule is applied from here on
                if rule.subject.matches(element) and self._in_context(element, rule.context, 0):
                    rules.append(rule)
        rules.sort(key=lambda rule: rule.rank)
        return rules

    def _in_context(self, element: Element, context: tuple[tuple[str, _Compound], ...], at: int) -> bool:
        """Whether the ancestors of ``element`` match ``context[at:]`` (backtracking over the
        descendant combinator, as a browser matches right to left)."""
        if at == len(context):
            return True
        combinator, compound = context[at]
        ancestor = element.parent
        while ancestor is not None:
            self._steps -= 1
            if self._steps < 0:
                return False  # past the message's budget: the selector is not applied
            if compound.matches(ancestor) and self._in_context(ancestor, context, at + 1):
                return True
            if combinator == ">":
                return False
            ancestor = ancestor.parent
        return False
