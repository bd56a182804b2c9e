"""HTML as a mail client shows it: the text a reader sees, and nothing a spammer hid.

Spam hides ham words where a reader never sees them (``display:none``, a zero font size, white
text on white, an element squeezed to nothing) so that a text classifier reads the ham and not the
offer. This module parses the HTML with lexbor (an HTML5 parser in C, through selectolax: linear,
no recursion limit, the tree a browser builds from the same sloppy markup) and walks the tree with
an explicit stack, dropping what a mail client would not display:

- ``<head>``, ``<title>``, ``<style>``, ``<script>``, ``<template>``, comments, and what an
  ``<iframe>`` holds (a browser shows the page its ``src`` names, never that text);
- elements hidden by an inline ``style``, by a ``<style>`` rule whose selector matches them, or by
  the ``hidden`` attribute: ``display:none``, ``visibility:hidden``, a font size under 2 px,
  ``opacity`` under 0.1, a zero width or height with overflow hidden, text pushed thousands of
  pixels off the page, ``mso-hide:all``;
- text in (nearly) the colour of its background, colours inherited as CSS inherits them.

Link text and image alt text are kept; block elements become line breaks, table cells spaces.
Quotations of earlier mail (``<blockquote type="cite">``, the webmail quote classes) come out as
``>`` lines, as a plain-text reply would quote them, for :mod:`.quotes` to weigh.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from selectolax.lexbor import LexborHTMLParser, LexborNode

_MAX_STYLE_RULES = 256  # <style> rules read per message: spam templates use a handful
_MAX_SELECTOR_CHARS = 200
_MAX_STYLE_CHARS = 100_000  # of all <style> text looked at

_SKIPPED = frozenset(
    {"head", "title", "style", "script", "template", "-comment", "!doctype", "svg", "iframe"}
)
_BLOCK_TAGS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "br", "center", "dd", "div", "dl", "dt"),
        *("fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5"),
        *("h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table"),
        *("tbody", "tfoot", "thead", "tr", "ul"),
    }
)
_CELL_TAGS = frozenset({"td", "th"})
_BLANK_LINES = re.compile(r"\n{3,}")
# Begin and end of a quotation in the collected text: NUL never occurs in it (extract_text removes
# NULs before rendering), so no markup can forge one.
_QUOTE_BEGIN, _QUOTE_END = "\x00[", "\x00]"
_QUOTE_CLASSES = ("gmail_quote", "moz-cite", "yahoo_quoted", "protonmail_quote", "divrplyfwdmsg")

Colour = tuple[int, int, int]
_WHITE: Colour = (255, 255, 255)
_BLACK: Colour = (0, 0, 0)
# The colours that spam uses by name (CSS knows 148; the rest are as good as any other colour
# here: text in them is only hidden on a background of the same name).
_NAMED_COLOURS: dict[str, Colour] = {
    "white": _WHITE,
    "black": _BLACK,
    "snow": (255, 250, 250),
    "ivory": (255, 255, 240),
    "whitesmoke": (245, 245, 245),
    "ghostwhite": (248, 248, 255),
    "floralwhite": (255, 250, 240),
    "azure": (240, 255, 255),
    "mintcream": (245, 255, 250),
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "silver": (192, 192, 192),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "navy": (0, 0, 128),
    "lightgray": (211, 211, 211),
    "lightgrey": (211, 211, 211),
}
_LINK_BLUE: Colour = (0, 0, 238)
_COLOUR_IN_SHORTHAND = re.compile(r"rgba?\([^)]*\)|#[0-9a-f]{3,6}\b|\b[a-z]+\b")
_COLOUR_DISTANCE = 24  # sum of channel differences under which text cannot be told from its ground

_DECLARATION = re.compile(r"([a-zA-Z-]+)\s*:\s*([^;]*)")
_MAX_RULE_SELECTOR_CHARS = 2000  # of the text before a rule's "{" read as its selectors
_LENGTH = re.compile(r"^(-?[0-9]*\.?[0-9]+)\s*(px|pt|em|rem|%|ex|ch|vw|vh|cm|mm|in)?$")
_HEX = re.compile(r"^#([0-9a-f]{3}|[0-9a-f]{6})$")
_NUMBER = r"\s*([0-9.]+%?)\s*"
_RGB = re.compile(rf"^rgba?\({_NUMBER}[, ]{_NUMBER}[, ]{_NUMBER}(?:[,/]{_NUMBER})?\)$")


def _declarations(style: str) -> dict[str, str]:
    found: dict[str, str] = {}
    if not style:
        return found
    for name, value in _DECLARATION.findall(style[:4000]):
        found[name.lower()] = value.replace("!important", "").strip().lower()
    return found


def _pixels(value: str) -> float | None:
    """A CSS length in pixels (roughly: 1pt is 4/3 px, 1em 16 px), or None for anything else."""
    match = _LENGTH.match(value.strip())
    if match is None:
        return None
    number, unit = float(match.group(1)), match.group(2) or "px"
    scale = {"pt": 4 / 3, "em": 16, "rem": 16, "ex": 8, "ch": 8, "%": 0.16, "cm": 38, "mm": 3.8, "in": 96}
    return number * scale.get(unit, 1.0)


def _colour(value: str) -> Colour | None:
    value = value.strip().lower()
    if value in _NAMED_COLOURS:
        return _NAMED_COLOURS[value]
    match = _HEX.match(value) or _HEX.match("#" + value)  # bgcolor=ffffff is common in mail
    if match:
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
    match = _RGB.match(value)
    if match:
        if match.group(4) is not None and _channel(match.group(4), 1.0) < 0.1:
            return None  # transparent: the ground shows through (handled as opacity elsewhere)
        red, green, blue = (int(min(255.0, _channel(match.group(i), 255.0))) for i in (1, 2, 3))
        return (red, green, blue)
    return None


def _channel(text: str, full: float) -> float:
    return float(text[:-1]) * full / 100 if text.endswith("%") else float(text)


def _hides(declarations: dict[str, str]) -> bool:
    """Whether these CSS declarations make an element and its content invisible."""
    if not declarations:
        return False  # most elements: no style at all
    if declarations.get("display", "").startswith("none"):
        return True
    if declarations.get("visibility", "") in ("hidden", "collapse"):
        return True
    if declarations.get("mso-hide", "") == "all":
        return True
    # "font: 0/0 a" is the templates' favourite: the shorthand's size is its first length.
    font = declarations.get("font", "").replace("/", " ").split()
    size = _pixels(declarations.get("font-size", "x")) if "font-size" in declarations else None
    if size is None:
        size = next((length for word in font if (length := _pixels(word)) is not None), None)
    if size is not None and size < 2:
        return True
    if declarations.get("color", "") == "transparent":
        return True
    opacity = declarations.get("opacity", "")
    if opacity and _LENGTH.match(opacity) and _channel(opacity, 1.0) < 0.1:
        return True
    clipped = declarations.get("overflow", "") in ("hidden", "clip")
    for box in ("width", "height", "max-width", "max-height"):
        length = _pixels(declarations.get(box, "x"))
        if length is not None and length <= 1 and clipped:
            return True
    for offset in ("left", "top", "text-indent", "margin-left", "margin-top"):
        length = _pixels(declarations.get(offset, "x"))
        if length is not None and length <= -500:
            return True  # pushed off the page
    return False


@dataclass(frozen=True)
class _Ink:
    """The colours text is drawn in and on, as inherited from the ancestors."""

    colour: Colour
    ground: Colour

    def under(self, tag: str, attributes: dict[str, str | None], declarations: dict[str, str]) -> _Ink:
        if not declarations and "color" not in attributes and "bgcolor" not in attributes and tag != "a":
            return self  # nothing of colour changes: most elements
        colour = _colour(declarations.get("color", "") or (attributes.get("color") or ""))
        if colour is None and tag == "a" and attributes.get("href"):
            colour = _LINK_BLUE  # a link has a colour of its own unless styled
        ground = _colour(declarations.get("background-color", ""))
        if ground is None and "background" in declarations:  # the shorthand: find its colour
            for found in _COLOUR_IN_SHORTHAND.finditer(declarations["background"][:200]):
                ground = _colour(found.group(0))
                if ground is not None:
                    break
        if ground is None:
            ground = _colour(attributes.get("bgcolor") or "")
        return _Ink(colour or self.colour, ground or self.ground)

    @functools.cached_property  # read for every text node under it
    def invisible(self) -> bool:
        return sum(abs(a - b) for a, b in zip(self.colour, self.ground, strict=True)) < _COLOUR_DISTANCE


@dataclass(frozen=True)
class _Selector:
    """A simple selector of a hiding <style> rule: a tag, classes and an id, any of them optional."""

    tag: str | None
    classes: frozenset[str]
    ident: str | None

    def matches(self, tag: str, classes: set[str], ident: str | None) -> bool:
        return (
            (self.tag is None or self.tag == tag)
            and self.classes <= classes
            and (self.ident is None or self.ident == ident)
        )


_SIMPLE_SELECTOR = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)?((?:[.#][\w-]+)*)")


class _HidingRules:
    """The <style> rules that hide what they select. Only simple selectors (``p``, ``.x``,
    ``#id``, ``span.a.b``: how templates hide text) are applied, each matched while the tree is
    walked, by a dictionary look-up per tag, class and id: a stylesheet cannot make the walk cost
    more than the markup's size (selector queries over the whole tree took 70 s on 320 KB)."""

    def __init__(self, tree: LexborHTMLParser) -> None:
        self._by_key: dict[str, list[_Selector]] = {}
        sheets = "".join(node.text(deep=True) for node in tree.css("style"))[:_MAX_STYLE_CHARS]
        sheets = re.sub(r"/\*.*?\*/", "", sheets, flags=re.DOTALL)
        for count, (selectors, body) in enumerate(_rules(sheets)):
            if count >= _MAX_STYLE_RULES:
                break
            if _hides(_declarations(body)):
                for text in selectors.split(","):
                    self._add(text.strip())

    def _add(self, text: str) -> None:
        match = _SIMPLE_SELECTOR.fullmatch(text)
        if not text or len(text) > _MAX_SELECTOR_CHARS or match is None:
            return  # combinators, attributes, pseudo-classes: not how mail hides text
        parts = re.findall(r"[.#][\w-]+", match.group(2) or "")
        idents = [part[1:] for part in parts if part[0] == "#"]
        selector = _Selector(
            (match.group(1) or "").lower() or None,
            frozenset(part[1:] for part in parts if part[0] == "."),
            idents[0] if idents else None,
        )
        key = (
            f"#{selector.ident}"
            if selector.ident
            else (f".{min(selector.classes)}" if selector.classes else (selector.tag or ""))
        )
        if key and key not in ("html", "body"):
            self._by_key.setdefault(key, []).append(selector)

    def hide(self, tag: str, attributes: dict[str, str | None]) -> bool:
        if not self._by_key:
            return False
        classes = set((attributes.get("class") or "").split())
        ident = attributes.get("id")
        keys = [tag, *(f".{name}" for name in classes), *([f"#{ident}"] if ident else [])]
        return any(
            selector.matches(tag, classes, ident) for key in keys for selector in self._by_key.get(key, ())
        )


def _rules(sheets: str) -> Iterator[tuple[str, str]]:
    """(selectors, declarations) of each ``selectors { declarations }`` rule, in one pass: the
    text between the last ``{`` and the ``}`` that ends a rule, and before it the last
    ``_MAX_RULE_SELECTOR_CHARS`` characters since the brace before. (A regular expression that
    tried a selector of up to 2,000 characters at every offset took 1.6 s on a stylesheet of
    100,000 characters without a brace, once per HTML part.)"""
    for chunk in sheets.split("}")[:-1]:  # what follows the last "}" ends no rule
        *before, body = chunk.split("{")
        if before and before[-1]:
            yield before[-1][-_MAX_RULE_SELECTOR_CHARS:], body


# The HTML parser's formatting elements: one left open is re-opened at every block after it (the
# spec's "reconstruct the active formatting elements"). Thousands left open, each with attributes
# of its own (no two alike, which the spec would collapse), before thousands of paragraphs made a
# tree of millions of elements: 55 KB of markup took 14 s and 2.8 GB.
_FORMATTING = (
    "a",
    "b",
    "big",
    "code",
    "em",
    "font",
    "i",
    "nobr",
    "s",
    "small",
    "strike",
    "strong",
    "tt",
    "u",
)
_FORMATTING_TAG = re.compile(rf"<(/?)({'|'.join(_FORMATTING)})(?=[\s/>])", re.IGNORECASE)
_PLAIN_PREFIX = "sf-plain-"  # a custom element: parsed as an ordinary element, never re-opened
_MAX_REOPENED = 50_000  # elements the re-opening could make (open formatting x tags) before it is avoided


def _without_reopening(markup: str) -> str:
    """``markup`` as it is, or, where its open formatting elements times its tags could make the
    parser build more than ``_MAX_REOPENED`` elements, with every formatting tag renamed to a
    custom element that the walk reads as the tag it was. The text and the styles stay; only
    misnested formatting (``<b><p>x</b>y``) may then end where the markup says, not where a
    browser's repair would move it."""
    found = _FORMATTING_TAG.findall(markup)
    tags = markup.count("<")
    if len(found) * tags <= _MAX_REOPENED:  # at most that many open: nearly all mail stops here
        return markup
    depth: dict[str, int] = {}
    open_now = opened = 0  # formatting elements open at once, at most (end tags never count below 0)
    for slash, name in found:
        name = name.lower()
        if slash:
            if depth.get(name, 0) > 0:
                depth[name] -= 1
                open_now -= 1
        else:
            depth[name] = depth.get(name, 0) + 1
            open_now += 1
            opened = max(opened, open_now)
    if opened * tags <= _MAX_REOPENED:
        return markup
    return _FORMATTING_TAG.sub(lambda m: f"<{m.group(1)}{_PLAIN_PREFIX}{m.group(2)}", markup)


def visible_text(markup: str) -> str:
    """The text a mail client shows for ``markup``, whitespace collapsed, lines kept."""
    tree = LexborHTMLParser(_without_reopening(markup))
    rules = _HidingRules(tree)
    out: list[str] = []
    root = tree.root
    if root is None:
        return ""
    # Explicit stack: spam nests elements thousands deep. A str entry is text to emit on the way out.
    stack: list[tuple[LexborNode, _Ink] | str] = [(root, _Ink(_BLACK, _WHITE))]
    while stack:
        entry = stack.pop()
        if isinstance(entry, str):
            out.append(entry)
            continue
        node, ink = entry
        tag = node.tag or ""
        if tag.startswith(_PLAIN_PREFIX):
            tag = tag[len(_PLAIN_PREFIX) :]
        if tag == "-text":
            text = node.text_content or ""
            if not ink.invisible or not text.strip():  # white space separates words in any colour
                out.append(text)
            continue
        if tag in _SKIPPED:
            continue
        attributes = node.attributes
        declarations = _declarations(attributes.get("style") or "")
        if "hidden" in attributes or _hides(declarations) or rules.hide(tag, attributes):
            continue
        if tag == "font" and (attributes.get("size") or "").strip() in ("0", "-7", "-6"):
            continue
        ink = ink.under(tag, attributes, declarations)
        if tag == "img":
            alt = attributes.get("alt")  # drawn as an image, whatever the text colour
            if alt:
                out.append(f" {alt} ")
            continue
        separator = "\n" if tag in _BLOCK_TAGS else " " if tag in _CELL_TAGS else ""
        if _is_quotation(tag, attributes):
            out.append(_QUOTE_BEGIN)
            stack.append(_QUOTE_END)
        out.append(separator)
        stack.append("" if tag == "br" else separator)
        children = []
        child = node.child
        while child is not None:
            children.append(child)
            child = child.next
        stack.extend((child, ink) for child in reversed(children))
    return _BLANK_LINES.sub("\n\n", "\n".join(_quoted_lines("".join(out)))).strip()


def _is_quotation(tag: str, attributes: dict[str, str | None]) -> bool:
    if tag == "blockquote" and (attributes.get("type") or "").lower() == "cite":
        return True
    classes = (attributes.get("class") or "").lower()
    return tag in ("div", "blockquote") and any(name in classes for name in _QUOTE_CLASSES)


def _quoted_lines(text: str) -> list[str]:
    """Whitespace collapsed per line, and the lines inside quotation markers prefixed with '>'."""
    lines: list[str] = []
    depth = 0
    for piece in re.split(r"(\x00[\[\]])", text):
        if piece == _QUOTE_BEGIN:
            depth += 1
            lines.append("")
        elif piece == _QUOTE_END:
            depth = max(0, depth - 1)
            lines.append("")
        else:
            for number, line in enumerate(piece.split("\n")):
                words = " ".join(line.split())
                if number == 0 and lines and lines[-1]:
                    lines[-1] = f"{lines[-1]} {words}".strip() if words else lines[-1]
                elif words or not depth:
                    lines.append(("> " * depth + words) if words else "")
    return lines
