"""HTML as a mail client shows it: the text a reader sees, and nothing a spammer hid.

Spam hides ham words where a reader never sees them (``display:none``, a zero font size, white
text on white, an element squeezed to nothing) so that a text classifier reads the ham and not the
offer. This module parses the HTML with lexbor (an HTML5 parser in C, through selectolax: linear,
no recursion limit, the tree a browser builds from the same sloppy markup) and walks the tree with
an explicit stack, dropping what a mail client would not display:

- ``<head>``, ``<title>``, ``<style>``, ``<script>``, ``<template>``, comments, and what an
  ``<iframe>`` holds (a browser shows the page its ``src`` names, never that text);
- what no browser draws: ``<rp>``, ``<datalist>``, ``<noembed>``, ``<noframes>``, MathML
  annotations, the fallback text of ``<audio>``, ``<video>``, ``<progress>`` and ``<meter>``, a
  closed ``<details>`` past its ``<summary>``, a ``<dialog>`` not open, the options of a
  ``<select>`` other than the one it shows;
- elements hidden by their declarations (their ``style`` attribute and the ``<style>`` rules that
  match them, cascaded as a browser cascades them: :mod:`.css`) or by the ``hidden`` attribute:
  ``display:none``, ``opacity`` under 0.1, a zero width or height with overflow hidden, text
  pushed thousands of pixels off the page (or moved there), ``transform: scale(0)``, a ``clip``
  of no area, ``filter: opacity(0)``, ``content-visibility: hidden``; the alt text of a tracking
  pixel;
- text that cannot be seen where it is drawn, from what it inherits as CSS inherits it (so a
  descendant can undo it, as in a browser): ``visibility:hidden``, a font size under 2 px
  (relative sizes taken from the parent's), a transparent colour, (nearly) the colour of its
  background.

Outlook's ``mso-hide:all`` hides nothing here: every other client shows that text.

Link text and image alt text are kept; block elements become line breaks, table cells spaces.
Quotations of earlier mail (``<blockquote type="cite">``, the webmail quote classes) come out as
``>`` lines, as a plain-text reply would quote them, for :mod:`.quotes` to weigh.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

from selectolax.lexbor import LexborHTMLParser, LexborNode

from .css import (
    ALL_VIEWS,
    MAX_STYLE_CHARS,
    VIEW_WIDTHS,
    Element,
    StyleSheet,
    VariableBudget,
    generated_text,
    media_views,
    with_variables,
)
from .css import LENGTH as _LENGTH
from .css import declarations as css_declarations
from .css import pixels as _pixels

_SKIPPED = frozenset(
    {
        *("head", "title", "style", "script", "template", "-comment", "!doctype", "iframe"),
        # never drawn: ruby's fallback brackets, a list of suggestions, what browsers without
        # plugins or frames would show, MathML's annotations, and the fallback text of media and
        # gauges (shown only by a browser that cannot draw the element itself)
        *("rp", "datalist", "noembed", "noframes", "annotation", "annotation-xml"),
        *("audio", "video", "progress", "meter"),
    }
)
_BLOCK_TAGS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "br", "center", "dd", "div", "dl", "dt"),
        *("fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5"),
        *("h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table"),
        *("tbody", "tfoot", "thead", "tr", "ul", "details", "summary", "dialog"),
    }
)
_CELL_TAGS = frozenset({"td", "th"})
_SPACED_DISPLAYS = frozenset({"inline-block", "inline-flex", "inline-grid", "inline-table", "table-cell"})
_BLOCK_DISPLAYS = frozenset({"block", "flex", "grid", "list-item", "table", "table-row", "flow-root"})
_BLANK_LINES = re.compile(r"\n{3,}")
# Begin and end of a quotation in the collected text: NUL never occurs in it (extract_text removes
# NULs before rendering), so no markup can forge one.
_QUOTE_BEGIN, _QUOTE_END = "\x00[", "\x00]"
# Begin and end of text drawn right to left letter by letter (``<bdo dir=rtl>``, ``unicode-bidi:
# bidi-override`` with ``direction: rtl``): "won yub" written so is "buy now" to a reader.
_REVERSED_BEGIN, _REVERSED_END = "\x00<", "\x00>"
# Put before a line of HTML text that begins with ">" (``<p>&gt;&gt; OFFER</p>``): no client shows
# that as a quotation, so :mod:`.quotes` must not weigh it as one; extract_text removes the mark
# once quotations are dropped. A noncharacter: no normalisation changes it, and mail has none.
LITERAL_MARK = "\ufdd0"
_QUOTE_CLASSES = ("gmail_quote", "moz-cite", "yahoo_quoted", "protonmail_quote", "divrplyfwdmsg")

Colour = tuple[int, int, int]
_WHITE: Colour = (255, 255, 255)
_BLACK: Colour = (0, 0, 0)
# CSS's named colours, all 148 of them (CSS Color 4; "grey" and "gray" spellings alike): white
# text on "darkred" is seen, "wheat" on "wheat" is not.
_NAMED_COLOURS: dict[str, Colour] = {
    "aliceblue": (240, 248, 255),
    "antiquewhite": (250, 235, 215),
    "aqua": (0, 255, 255),
    "aquamarine": (127, 255, 212),
    "azure": (240, 255, 255),
    "beige": (245, 245, 220),
    "bisque": (255, 228, 196),
    "black": (0, 0, 0),
    "blanchedalmond": (255, 235, 205),
    "blue": (0, 0, 255),
    "blueviolet": (138, 43, 226),
    "brown": (165, 42, 42),
    "burlywood": (222, 184, 135),
    "cadetblue": (95, 158, 160),
    "chartreuse": (127, 255, 0),
    "chocolate": (210, 105, 30),
    "coral": (255, 127, 80),
    "cornflowerblue": (100, 149, 237),
    "cornsilk": (255, 248, 220),
    "crimson": (220, 20, 60),
    "cyan": (0, 255, 255),
    "darkblue": (0, 0, 139),
    "darkcyan": (0, 139, 139),
    "darkgoldenrod": (184, 134, 11),
    "darkgray": (169, 169, 169),
    "darkgreen": (0, 100, 0),
    "darkgrey": (169, 169, 169),
    "darkkhaki": (189, 183, 107),
    "darkmagenta": (139, 0, 139),
    "darkolivegreen": (85, 107, 47),
    "darkorange": (255, 140, 0),
    "darkorchid": (153, 50, 204),
    "darkred": (139, 0, 0),
    "darksalmon": (233, 150, 122),
    "darkseagreen": (143, 188, 143),
    "darkslateblue": (72, 61, 139),
    "darkslategray": (47, 79, 79),
    "darkslategrey": (47, 79, 79),
    "darkturquoise": (0, 206, 209),
    "darkviolet": (148, 0, 211),
    "deeppink": (255, 20, 147),
    "deepskyblue": (0, 191, 255),
    "dimgray": (105, 105, 105),
    "dimgrey": (105, 105, 105),
    "dodgerblue": (30, 144, 255),
    "firebrick": (178, 34, 34),
    "floralwhite": (255, 250, 240),
    "forestgreen": (34, 139, 34),
    "fuchsia": (255, 0, 255),
    "gainsboro": (220, 220, 220),
    "ghostwhite": (248, 248, 255),
    "gold": (255, 215, 0),
    "goldenrod": (218, 165, 32),
    "gray": (128, 128, 128),
    "green": (0, 128, 0),
    "greenyellow": (173, 255, 47),
    "grey": (128, 128, 128),
    "honeydew": (240, 255, 240),
    "hotpink": (255, 105, 180),
    "indianred": (205, 92, 92),
    "indigo": (75, 0, 130),
    "ivory": (255, 255, 240),
    "khaki": (240, 230, 140),
    "lavender": (230, 230, 250),
    "lavenderblush": (255, 240, 245),
    "lawngreen": (124, 252, 0),
    "lemonchiffon": (255, 250, 205),
    "lightblue": (173, 216, 230),
    "lightcoral": (240, 128, 128),
    "lightcyan": (224, 255, 255),
    "lightgoldenrodyellow": (250, 250, 210),
    "lightgray": (211, 211, 211),
    "lightgreen": (144, 238, 144),
    "lightgrey": (211, 211, 211),
    "lightpink": (255, 182, 193),
    "lightsalmon": (255, 160, 122),
    "lightseagreen": (32, 178, 170),
    "lightskyblue": (135, 206, 250),
    "lightslategray": (119, 136, 153),
    "lightslategrey": (119, 136, 153),
    "lightsteelblue": (176, 196, 222),
    "lightyellow": (255, 255, 224),
    "lime": (0, 255, 0),
    "limegreen": (50, 205, 50),
    "linen": (250, 240, 230),
    "magenta": (255, 0, 255),
    "maroon": (128, 0, 0),
    "mediumaquamarine": (102, 205, 170),
    "mediumblue": (0, 0, 205),
    "mediumorchid": (186, 85, 211),
    "mediumpurple": (147, 112, 219),
    "mediumseagreen": (60, 179, 113),
    "mediumslateblue": (123, 104, 238),
    "mediumspringgreen": (0, 250, 154),
    "mediumturquoise": (72, 209, 204),
    "mediumvioletred": (199, 21, 133),
    "midnightblue": (25, 25, 112),
    "mintcream": (245, 255, 250),
    "mistyrose": (255, 228, 225),
    "moccasin": (255, 228, 181),
    "navajowhite": (255, 222, 173),
    "navy": (0, 0, 128),
    "oldlace": (253, 245, 230),
    "olive": (128, 128, 0),
    "olivedrab": (107, 142, 35),
    "orange": (255, 165, 0),
    "orangered": (255, 69, 0),
    "orchid": (218, 112, 214),
    "palegoldenrod": (238, 232, 170),
    "palegreen": (152, 251, 152),
    "paleturquoise": (175, 238, 238),
    "palevioletred": (219, 112, 147),
    "papayawhip": (255, 239, 213),
    "peachpuff": (255, 218, 185),
    "peru": (205, 133, 63),
    "pink": (255, 192, 203),
    "plum": (221, 160, 221),
    "powderblue": (176, 224, 230),
    "purple": (128, 0, 128),
    "rebeccapurple": (102, 51, 153),
    "red": (255, 0, 0),
    "rosybrown": (188, 143, 143),
    "royalblue": (65, 105, 225),
    "saddlebrown": (139, 69, 19),
    "salmon": (250, 128, 114),
    "sandybrown": (244, 164, 96),
    "seagreen": (46, 139, 87),
    "seashell": (255, 245, 238),
    "sienna": (160, 82, 45),
    "silver": (192, 192, 192),
    "skyblue": (135, 206, 235),
    "slateblue": (106, 90, 205),
    "slategray": (112, 128, 144),
    "slategrey": (112, 128, 144),
    "snow": (255, 250, 250),
    "springgreen": (0, 255, 127),
    "steelblue": (70, 130, 180),
    "tan": (210, 180, 140),
    "teal": (0, 128, 128),
    "thistle": (216, 191, 216),
    "tomato": (255, 99, 71),
    "turquoise": (64, 224, 208),
    "violet": (238, 130, 238),
    "wheat": (245, 222, 179),
    "white": (255, 255, 255),
    "whitesmoke": (245, 245, 245),
    "yellow": (255, 255, 0),
    "yellowgreen": (154, 205, 50),
}
_LINK_BLUE: Colour = (0, 0, 238)
_INHERITING = frozenset({"", "inherit", "unset", "revert", "revert-layer", "currentcolor"})
_UNKNOWN = "unknown"  # a text colour that a client computes and this reader cannot: text in it is seen
_KEEPS_GROUND = (_INHERITING - {"currentcolor"}) | {"initial", "none", "transparent"}  # a background's
# The pieces of a ``background`` shorthand: a function whole, a hex colour, a word or a length.
_SHORTHAND_PIECE = re.compile(r"[a-z-]+\([^)]*\)?|[^\s,/()]+")
# what a ``background`` shorthand may say besides its colour (and lengths and pictures)
_BACKGROUND_WORDS = frozenset(
    {
        *("none", "repeat", "repeat-x", "repeat-y", "no-repeat", "space", "round", "scroll"),
        *("fixed", "local", "top", "bottom", "left", "right", "center", "border-box"),
        *("padding-box", "content-box", "text", "auto", "cover", "contain"),
        *("initial", "inherit", "unset", "revert", "revert-layer"),
    }
)
_COLOUR_DISTANCE = 24  # sum of channel differences under which text cannot be told from its ground

_HEX = re.compile(r"^#([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})$")  # 4 and 8 digits: with an alpha
_NUMBER = r"\s*([0-9.]+%?)\s*"
_RGB = re.compile(rf"^rgba?\({_NUMBER}[, ]{_NUMBER}[, ]{_NUMBER}(?:[,/]{_NUMBER})?\)$")
_HSL = re.compile(rf"^hsla?\(\s*([0-9.]+)(?:deg)?\s*[, ]{_NUMBER}[, ]{_NUMBER}(?:[,/]{_NUMBER})?\)$")
_TRANSPARENT = "transparent"  # a colour that draws nothing: the ground shows through
_SCALE = re.compile(r"\bscale(x|y|3d)?\(([^)]*)\)")
_RECT = re.compile(r"rect\(([^)]*)\)")
_TRANSLATED_AWAY = re.compile(r"translate[xy]?\(\s*-?[0-9]{4,}(?:\.[0-9]*)?px")  # thousands of px away
_OPACITY_FILTER = re.compile(r"opacity\(([^)]*)\)")  # filter: opacity(0), opacity(5%)
_INSET = re.compile(r"inset\(\s*([0-9.]+)%")
_RADIUS = re.compile(r"(?:circle|ellipse)\(\s*([^\s,)]*)")  # the first radius: circle(0), ellipse(0 0)
_DEFAULT_SIZE = 16.0  # px: a mail client's default font size
_POSITIONED = frozenset({"absolute", "fixed", "relative", "sticky"})
_ESCAPING = frozenset({"absolute", "fixed"})  # placed against an ancestor that is positioned, or the page
_RELATIVE = frozenset({"relative", "sticky"})  # moved from where the page's flow puts them
_OFF_THE_PAGE = -500.0  # px: a box moved, or a first line indented, further left or up is off any window
_FONT_KEYWORDS = {
    "xx-small": 9.0,
    "x-small": 10.0,
    "small": 13.0,
    "medium": 16.0,
    "large": 18.0,
    "x-large": 24.0,
    "xx-large": 32.0,
}
_FONT_SIZE_ATTRIBUTE = {1: 10.0, 2: 13.0, 3: 16.0, 4: 18.0, 5: 24.0, 6: 32.0, 7: 48.0}  # <font size=N>
_TOO_SMALL = 2.0  # px: text smaller than this cannot be read
_FADED = 0.1  # opacity under which text cannot be read


def _font_size(value: str, parent: float) -> float | None:
    """A ``font-size`` in pixels, relative units taken from the parent's size; None if unknown."""
    value = value.strip()
    if value in _FONT_KEYWORDS:
        return _FONT_KEYWORDS[value]
    if value in ("smaller", "larger"):
        return parent / 1.2 if value == "smaller" else parent * 1.2
    match = _LENGTH.match(value)
    if match is None:
        return None
    number, unit = float(match.group(1)), match.group(2) or "px"
    relative = {"em": parent, "%": parent / 100, "ex": parent / 2, "ch": parent / 2}
    return number * relative.get(unit, 1.0) if unit in relative else _pixels(value)


@functools.lru_cache(maxsize=4096)  # mail repeats its few colours on every element
def _colour(value: str) -> Colour | str | None:
    """A CSS colour: its RGB, ``_TRANSPARENT`` for one that draws nothing (``transparent``, an
    alpha under 0.1), None for one this module does not know (the inherited colour stays)."""
    value = value.strip().lower()
    if value in _NAMED_COLOURS:
        return _NAMED_COLOURS[value]
    if value == _TRANSPARENT:
        return _TRANSPARENT
    match = _HEX.match(value) or _HEX.match("#" + value)  # bgcolor=ffffff is common in mail
    if match:
        digits = match.group(1)
        if len(digits) <= 4:
            digits = "".join(c * 2 for c in digits)
        if len(digits) == 8 and int(digits[6:8], 16) / 255 < 0.1:
            return _TRANSPARENT
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
    rgb, hsl = _RGB.match(value), _HSL.match(value)
    found = rgb or hsl
    if found is None:
        return None
    try:
        if found.group(4) is not None and _channel(found.group(4), 1.0) < 0.1:
            return _TRANSPARENT
        if rgb is not None:
            red, green, blue = (min(255.0, _channel(rgb.group(i), 255.0)) for i in (1, 2, 3))
        else:
            lightness, saturation = _channel(found.group(3), 1.0), _channel(found.group(2), 1.0)
            hue = float(found.group(1)) % 360
            red, green, blue = _hsl_to_rgb(hue, min(saturation, 1.0), min(lightness, 1.0))
    except ValueError:  # "1.2.3": the pattern's digits and dots, not a number
        return None
    return (int(red), int(green), int(blue))


def _legacy_colour(value: str) -> Colour | None:
    """:func:`_parsed_legacy_colour` of ``value`` as far as the rules read it (its first 128
    characters after the outer whitespace): the cache keeps no more of a hostile attribute."""
    return _parsed_legacy_colour(value.strip(" \t\n\f\r")[:_LEGACY_COLOUR_CHARS])


_LEGACY_COLOUR_CHARS = 128  # the rules cut the value there (each character past U+FFFF read as 2)


@functools.lru_cache(maxsize=1024)
def _parsed_legacy_colour(value: str) -> Colour | None:
    """A ``bgcolor``, ``color`` or ``text`` attribute's colour as a browser reads it (WHATWG's
    "rules for parsing a legacy colour value"): a name, ``#rgb``, or else hex digits read however
    they are written (``bgcolor=000000000`` and ``#00000`` are black, ``darkred`` is dark red,
    ``chucknorris`` is red); None for none (empty, ``transparent``)."""
    value = value.strip(" \t\n\f\r")
    if not value or value.lower() == _TRANSPARENT:
        return None
    named = _NAMED_COLOURS.get(value.lower())
    if named is not None:
        return named
    if len(value) == 4 and value[0] == "#" and all(c in _HEX_DIGITS for c in value[1:]):
        red, green, blue = (int(c, 16) * 17 for c in value[1:])
        return (red, green, blue)
    value = "".join("00" if ord(c) > 0xFFFF else c for c in value[:128])[:128]
    value = "".join(c if c in _HEX_DIGITS else "0" for c in value.removeprefix("#"))
    value += "0" * (-len(value) % 3 or (3 if not value else 0))
    length = len(value) // 3
    parts = [value[i * length : (i + 1) * length][-8:] for i in range(3)]
    while len(parts[0]) > 2 and all(part[0] == "0" for part in parts):
        parts = [part[1:] for part in parts]
    red, green, blue = (int(part[:2], 16) for part in parts)
    return (red, green, blue)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _shorthand_colour(shorthand: str) -> Colour | str | None:
    """The colour a ``background`` shorthand names (``_TRANSPARENT`` included), None where it names
    none, ``_UNKNOWN`` where it says something this reader cannot read (a colour it does not know)."""
    unknown = False
    for found in _SHORTHAND_PIECE.finditer(shorthand):
        piece = found.group(0)
        colour = _colour(piece)
        if colour is not None:
            return colour
        if piece not in _BACKGROUND_WORDS and not _LENGTH.match(piece):
            unknown = True
    return _UNKNOWN if unknown else None


def _hsl_to_rgb(hue: float, saturation: float, lightness: float) -> tuple[float, float, float]:
    chroma = (1 - abs(2 * lightness - 1)) * saturation
    second = chroma * (1 - abs((hue / 60) % 2 - 1))
    red, green, blue = [
        (chroma, second, 0.0),
        (second, chroma, 0.0),
        (0.0, chroma, second),
        (0.0, second, chroma),
        (second, 0.0, chroma),
        (chroma, 0.0, second),
    ][int(hue // 60) % 6]
    base = lightness - chroma / 2
    return ((red + base) * 255, (green + base) * 255, (blue + base) * 255)


def _channel(text: str, full: float) -> float:
    return float(text[:-1]) * full / 100 if text.endswith("%") else float(text)


def _hides(declarations: dict[str, str]) -> bool:
    """Whether these CSS declarations make an element and all it holds invisible, whatever its
    descendants declare (what a descendant can undo, a font size or ``visibility``, the colours,
    is inherited in ``_Ink`` instead: ``font-size:0`` on a table whose cells set their own size is
    how newsletters remove the spaces between cells, and those cells are read)."""
    if not declarations:
        return False  # most elements: no style at all
    if declarations.get("display", "") == "none":  # "none;" (an escaped semicolon) is no keyword: shown
        return True
    if _opacity(declarations.get("opacity", "")) < _FADED:
        return True
    clipped = declarations.get("overflow", "") in ("hidden", "clip")
    position = declarations.get("position", "")
    if position in _POSITIONED and _zero_box(declarations):
        return True  # a box of no room that holds even its absolutely placed descendants
    # Offsets move an element only where it is positioned ("left:-9999px" on a paragraph of the
    # page's flow moves nothing: a browser shows it); margins move any element. A move up from
    # where the element would stand is off the page only where less text stands above it
    # (raised(), decided by the walk); a box placed against the page is placed off it here.
    offsets = ("margin-left", "left", "top") if position in _ESCAPING else ("margin-left", "left")
    for offset in offsets if position in _POSITIONED else ("margin-left",):
        length = _length(declarations, offset)
        if length is not None and length <= _OFF_THE_PAGE:
            return True  # pushed off the page
    if position in _ESCAPING:
        for offset in ("left", "top"):
            length = _length(declarations, offset)
            if length is not None and length >= 5000:
                return True  # placed far past the right or the bottom of any window
    if _TRANSLATED_AWAY.search(declarations.get("transform", "")):
        return True
    if declarations.get("white-space", "") == "nowrap" and _indented_away(declarations, clipped):
        return True
    faded = _OPACITY_FILTER.search(declarations.get("filter", ""))
    if faded is not None and _opacity(faded.group(1).strip()) < _FADED:
        return True
    if declarations.get("content-visibility", "") == "hidden":
        return True
    return _clipped_to_nothing(declarations)


def _raised(declarations: dict[str, str]) -> float:
    """How far up (px) an element is drawn from where the page's flow puts it: its ``margin-top``,
    and its ``top`` where it is placed relative to that place. Off the page only if the text above
    it is shorter (:class:`_Height`); otherwise it is drawn over that text, and seen."""
    moved = 0.0
    for offset in ("margin-top", "top") if declarations.get("position", "") in _RELATIVE else ("margin-top",):
        length = _length(declarations, offset)
        if length is not None and length < 0:
            moved -= length
    return moved


class _Height:
    """The height of the page read so far, over-estimated: a line per 60 characters of text, 24 px a
    line (text that is not seen takes its room too), plus the heights that elements declare and
    those of pictures (1,000 px where unknown).
    A box raised by less is drawn over what stands above it and is read; by more, it is off the
    page. Counting more height reads more: a raised box that was off the page after all is padding,
    which the windows read at little cost, where hiding one that is drawn would hide an offer."""

    LINE = 24.0  # px
    CHARACTERS = 60  # per line
    PICTURE = 1000.0  # px: a picture of no declared height
    SIZES = ("height", "min-height", "padding-top", "padding-bottom", "margin-bottom")

    def __init__(self, out: list[str]) -> None:
        self.out, self.counted, self.lines, self.boxes = out, 0, 0, 0.0

    def __call__(self) -> float:
        for text in self.out[self.counted :]:
            self.lines += text.count("\n") + len(text) // self.CHARACTERS
        self.counted = len(self.out)
        return self.lines * self.LINE + self.boxes

    def add(self, tag: str, attributes: dict[str, str | None], declarations: dict[str, str]) -> None:
        """Count the height an element declares (a picture's, where it declares none)."""
        declared = [_length(declarations, size) for size in self.SIZES]
        if tag == "img" and declared[0] is None:
            declared.append(_pixels(attributes.get("height") or "x") or self.PICTURE)
        self.boxes += sum(min(abs(px), 100_000.0) for px in declared if px is not None)


def _length(declarations: dict[str, str], name: str) -> float | None:
    """A declared length in pixels; None where it is not declared or is no length."""
    value = declarations.get(name)
    return None if value is None else _pixels(value)


def _zero_box(declarations: dict[str, str]) -> bool:
    """A width or height of at most a pixel with its overflow cut: nothing laid out in it is seen."""
    if declarations.get("overflow", "") not in ("hidden", "clip"):
        return False
    for box in ("width", "height", "max-width", "max-height"):
        length = _length(declarations, box)
        if length is not None and length <= 1:
            return True
    return False


def _drawn_scale(declarations: dict[str, str]) -> float:
    """How many times its font size an element's text is drawn: its ``zoom`` (a number or a
    percentage; ``zoom:0`` is full size) times the lesser of its ``transform``'s scales along either
    axis (text squashed flat is no more read than text too small). ``scale(0.01)`` and ``zoom:2%``
    hide text; ``font-size:1px`` under ``scale(16)`` is drawn at 16 px, and read."""
    across = down = 1.0
    for found in _SCALE.finditer(declarations.get("transform", "")):
        factors = [_factor(factor) for factor in re.split(r"[\s,]+", found.group(2).strip()) if factor]
        if not factors or None in factors:
            continue  # not a scale a browser draws
        first = factors[0] or 0.0
        axis = found.group(1)
        if axis == "x":
            across *= first
        elif axis == "y":
            down *= first
        else:  # scale(a), scale(a, b), scale3d(a, b, c)
            across, down = across * first, down * (factors[1] or 0.0 if len(factors) > 1 else first)
    zoom = _factor(declarations.get("zoom", "").strip() or "1")
    if zoom is None or zoom <= 0:
        zoom = 1.0  # zoom:0, a negative or an unreadable zoom: drawn at full size
    return min(abs(across), abs(down), 1e6) * min(zoom, 1e6)


def _factor(text: str) -> float | None:
    """A number or a percentage as a factor (``50%`` is 0.5); None for anything else."""
    try:
        return _channel(text, 1.0)
    except ValueError:
        return None


def _indented_away(declarations: dict[str, str], clipped: bool) -> bool:
    """A line that ``white-space: nowrap`` keeps whole, indented past its box (the old image
    replacement: ``text-indent: 100%`` with its overflow hidden) or past any window."""
    indent = declarations.get("text-indent", "")
    if clipped and indent.endswith("%"):
        try:
            return float(indent[:-1]) >= 100
        except ValueError:
            return False
    length = _pixels(indent or "x")
    return length is not None and length >= (1000 if clipped else 5000)


def _clipped_to_nothing(declarations: dict[str, str]) -> bool:
    """``clip: rect(...)`` of no area on a positioned element, or a ``clip-path`` that keeps none of it."""
    clip_path = declarations.get("clip-path", "")
    inset = _INSET.search(clip_path)
    if inset is not None and float(inset.group(1) or 0) >= 50:
        return True
    radius = _RADIUS.search(clip_path)
    if radius is not None and _pixels(radius.group(1) or "x") == 0:
        return True
    rect = _RECT.search(declarations.get("clip", ""))
    if rect is None or declarations.get("position", "") not in ("absolute", "fixed"):
        return False
    sides = [_pixels(side) for side in re.split(r"[\s,]+", rect.group(1).strip())]
    if len(sides) != 4 or any(side is None for side in sides):
        return False
    top, right, bottom, left = (float(side or 0) for side in sides)
    return bottom - top < 1 or right - left < 1


_CURRENT = "currentcolor"  # a fill colour that is the text colour (the default)
_PICTURE = re.compile(r"url\(|image-set\(|gradient\(")


@dataclass(frozen=True)
class _Ink:
    """What an element's text inherits, as CSS inherits it (so a descendant may undo any of it):
    the colour it is drawn in (None: transparent; WebKit's ``-webkit-text-fill-color`` over it,
    which Apple Mail and Chrome draw whatever ``color`` says), the background under it (None: a
    picture, whose colours are unknown: text on it counts as seen), whether a ``text-shadow``
    draws it anyway, its font size in pixels and whether ``visibility`` shows it; and the product
    of the ``opacity`` of the element and its ancestors (not inherited, but each layer fades
    what it holds: three at 0.3 draw nothing a reader sees).

    ``text-indent`` is inherited too: a first line indented far to the left starts off the page, and
    a block inside that sets its own indent is seen (an inline element's indent moves nothing); only
    the first line is moved (:class:`_FirstLine`). So is ``line-height``: lines of no height in a
    box whose overflow is cut draw nothing, but a block inside with lines of its own grows the box
    and is seen. And a box of no room with its overflow cut (``height:0; overflow:hidden``) that is
    not itself positioned hides what flows in it but not a descendant placed ``absolute`` or
    ``fixed``, which is laid out against another box: a browser shows it, so ``clipped`` ends
    there."""

    colour: Colour | None
    ground: Colour | None
    fill: Colour | str | None = _CURRENT
    shadow: bool = False
    size: float = _DEFAULT_SIZE
    shown: bool = True
    alpha: float = 1.0
    indent: float = 0.0  # px of the first line's indent (text-indent)
    flat: bool = False  # lines of no height (line-height 0; a unitless line-height is a factor)
    cut: bool = False  # in a box of lines of no height whose overflow is cut
    clipped: bool = False  # in a box of no room, laid out in its flow
    variables: tuple[tuple[str, str], ...] = ()  # custom properties (--name: value), inherited
    scale: float = 1.0  # how many times its font size the text is drawn (zoom, transform scales)
    stroke: bool = False  # outlined by -webkit-text-stroke in a colour of its own: drawn whatever its fill
    recoloured: bool = False  # under an invert() filter or a blend mode: not drawn in its own colours
    painted: bool = False  # letters painted with a background (background-clip: text): seen if transparent

    def under(
        self,
        tag: str,
        attributes: dict[str, str | None],
        declarations: dict[str, str],
        variables: dict[str, str] | None = None,
    ) -> _Ink:
        if (
            not declarations
            and variables is None
            and "color" not in attributes
            and "bgcolor" not in attributes
            and "background" not in attributes
            and tag not in ("a", "body")
            and not (tag == "font" and "size" in attributes)
        ):
            return self  # nothing inherited changes: most elements
        colour = _colour(declarations.get("color", ""))
        if colour is None and declarations.get("color", "").strip() not in _INHERITING:
            colour = _UNKNOWN  # oklch(), color-mix(), a system colour: drawn in a colour not known here
        if colour is None:
            colour = _legacy_colour(attributes.get("color") or "")
        if colour is None and tag == "body":
            colour = _legacy_colour(attributes.get("text") or "")  # <body text="white">: the text colour
        if colour is None and tag == "a" and attributes.get("href"):
            colour = _LINK_BLUE  # a link has a colour of its own unless styled
        fill = self.fill
        if "-webkit-text-fill-color" in declarations:
            value = declarations["-webkit-text-fill-color"].strip()
            fill = _CURRENT if value == _CURRENT else _colour(value) or self.fill
        shadow = self.shadow
        if "text-shadow" in declarations:
            shadow = (
                declarations["text-shadow"].strip() not in ("", "none")
                and _TRANSPARENT not in (declarations["text-shadow"])
            )
        indent = self.indent
        if "text-indent" in declarations and _separator(tag, declarations.get("display", "")):
            indent = _pixels(declarations["text-indent"]) or 0.0  # a block's own first line
        flat = self.flat
        if "line-height" in declarations:
            flat = _pixels(declarations["line-height"]) == 0  # 0, 0px, 0em: lines of no height
        # a box cut to lines of no height (a box of other lines is as high as they are)
        cut = self.cut or (flat and declarations.get("overflow", "") in ("hidden", "clip"))
        position = declarations.get("position", "")
        clipped = (self.clipped and position not in _ESCAPING) or (
            position not in _POSITIONED and _zero_box(declarations)
        )
        return _Ink(
            self.colour if colour is None else (None if colour == _TRANSPARENT else colour),  # type: ignore[arg-type]
            self._ground_under(attributes, declarations),
            fill,
            shadow,
            self._size_under(tag, attributes, declarations),
            self.shown
            if declarations.get("visibility", "") not in ("hidden", "collapse", "visible")
            else declarations["visibility"] == "visible",
            self.alpha * _opacity(declarations.get("opacity", "")),
            indent,
            flat,
            cut,
            clipped,
            self.variables if variables is None else tuple(variables.items()),
            self.scale * _drawn_scale(declarations)
            if "transform" in declarations or "zoom" in declarations
            else self.scale,
            _stroked(declarations)
            if _STROKE_WIDTH in declarations or _STROKE in declarations
            else self.stroke,
            self.recoloured
            or _INVERTED.search(declarations.get("filter", "")) is not None
            or declarations.get("mix-blend-mode", "normal") not in ("normal", "initial", "unset", ""),
            self.painted or _paints_letters(declarations),
        )

    def _ground_under(self, attributes: dict[str, str | None], declarations: dict[str, str]) -> Colour | None:
        shorthand = declarations.get("background", "")[:200]
        if _PICTURE.search(shorthand) or _PICTURE.search(declarations.get("background-image", "")[:200]):
            return None
        if attributes.get("background"):  # <td background="picture.jpg">
            return None
        if "inset" in declarations.get("box-shadow", ""):
            return None  # a shadow drawn inside the box, under its text: a ground of its own
        value = declarations.get("background-color", "")
        ground = _colour(value)
        if ground is None and value.strip() not in _KEEPS_GROUND:
            # a value this reader cannot read (a browser keeps an earlier declaration that it can:
            # "background-color:#000; background-color:x" is black): the ground is unknown
            return None
        if ground is None and shorthand:  # the shorthand: find its colour
            ground = _shorthand_colour(shorthand)
            if ground == _UNKNOWN:
                return None  # a ground this reader cannot read: the text on it counts as seen
        if ground is None:
            ground = _legacy_colour(attributes.get("bgcolor") or "")
        return self.ground if ground is None or ground == _TRANSPARENT else ground  # type: ignore[return-value]

    def _size_under(self, tag: str, attributes: dict[str, str | None], declarations: dict[str, str]) -> float:
        size = self.size
        if tag == "font" and attributes.get("size"):
            size = _font_attribute_size(attributes.get("size") or "", size)
        if "font-size" in declarations:
            declared = _font_size(declarations["font-size"], self.size)
            if declared is None and declarations["font-size"].strip() not in _INHERITING:
                return _DEFAULT_SIZE  # calc(), max(), clamp(): a size this reader cannot compute, drawn
            return size if declared is None else declared
        if "font" in declarations:  # the shorthand ("font: 0/0 a"): its size is its first length
            words = declarations["font"].replace("/", " ").split()
            sizes = (_font_size(word, self.size) for word in words)
            return next((declared for declared in sizes if declared is not None), size)
        return size

    @property
    def invisible(self) -> bool:
        return self.indented_away or self.unseen

    @property
    def indented_away(self) -> bool:
        """Whether a block's first line starts off the page (its later lines are drawn)."""
        return self.indent <= _OFF_THE_PAGE

    @functools.cached_property  # read for every text node under it
    def unseen(self) -> bool:
        """Whether no line of this text is seen (the first line's indent aside)."""
        if not self.shown or self.size * self.scale < _TOO_SMALL or self.alpha < _FADED or self.clipped:
            return True
        if self.flat and self.cut:
            return True
        drawn = self.colour if self.fill == _CURRENT else (None if self.fill == _TRANSPARENT else self.fill)
        if drawn == _UNKNOWN:
            return False  # a colour this reader cannot compute, which a client draws: seen
        if drawn is None or isinstance(drawn, str):
            # transparent text that a shadow, an outline or its box's background (clipped to the
            # letters: gradient headings) draws is seen
            return not (self.shadow or self.stroke or self.painted)
        if self.ground is None or self.stroke or self.recoloured:
            return False  # on a picture, outlined, or drawn in colours other than its own
        return sum(abs(a - b) for a, b in zip(drawn, self.ground, strict=True)) < _COLOUR_DISTANCE


_STROKE, _STROKE_WIDTH = "-webkit-text-stroke", "-webkit-text-stroke-width"
_INVERTED = re.compile(r"invert\((?!\s*(?:0+\.?0*|\.0+)%?\s*\))")  # any but invert(0)


def _paints_letters(declarations: dict[str, str]) -> bool:
    """Whether the box's background is drawn through its letters (``background-clip: text``, or
    WebKit's prefixed one; Apple Mail, iOS Mail and Thunderbird draw it) over a ground of any kind:
    transparent text there is drawn in the background's colours."""
    clip = declarations.get("background-clip", "") + " " + declarations.get("-webkit-background-clip", "")
    return "text" in clip.lower().split()


def _stroked(declarations: dict[str, str]) -> bool:
    """Whether ``-webkit-text-stroke`` outlines the letters in a colour of their own (the outline
    is drawn in the text's colour unless it names one: transparent text stays unseen)."""
    value = declarations.get(_STROKE, "")
    width = declarations.get(_STROKE_WIDTH, "") or value
    colour = declarations.get("-webkit-text-stroke-color", "") or value
    drawn = any(word in ("thin", "medium", "thick") or (_pixels(word) or 0) > 0 for word in width.split())
    named = [_colour(word) for word in colour.split()]
    return drawn and any(found is not None and found != _TRANSPARENT for found in named)


class _FirstLine:
    """The first line of a block whose indent starts it off the page: a browser moves that line
    alone, and it ends at a ``<br>``, where a block inside begins, or where its room runs out (the
    line is as wide as the indent). The room is counted as a character per em of the indent; text
    is narrower (about half an em a character), so a browser hides more than this: what is read of
    it is padding that a spammer hid, which the windows read at little cost, where hiding the second
    line too would let an offer placed there (``padding<br>OFFER``) go unread."""

    __slots__ = ("room",)

    def __init__(self, ink: _Ink) -> None:
        self.room = int(-ink.indent / max(ink.size, 1.0))  # characters, white space collapsed

    def end(self) -> None:
        self.room = 0

    def drawn(self, text: str) -> str:
        """What of ``text`` is drawn on later lines, this line's room used up by the rest."""
        if self.room <= 0:
            return text
        for word in _WORD.finditer(text):
            taken = len(word.group()) + 1  # and the space after it
            if taken > self.room:
                self.room = 0
                return text[word.start() :]  # a word that does not fit begins the next line
            self.room -= taken
        return ""


_WORD = re.compile(r"\S+")


def _opacity(value: str) -> float:
    """An ``opacity`` declaration as a number from 0 to 1 (1 where there is none or it is unreadable)."""
    if not value or not _LENGTH.match(value):
        return 1.0
    try:
        return min(1.0, max(0.0, _channel(value, 1.0)))
    except ValueError:
        return 1.0


def _font_attribute_size(value: str, parent: float) -> float:
    """``<font size=N>`` (1 to 7, or +N/-N from 3) in pixels, as browsers clamp it."""
    value = value.strip()
    try:
        number = int(value)
    except ValueError:
        return parent
    if value[0] in "+-":
        number += 3
    return _FONT_SIZE_ATTRIBUTE[min(7, max(1, number))]


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


def _sheets(tree: LexborHTMLParser) -> list[tuple[str, int]]:
    """The text of each ``<style>`` that a browser applies, and the views it applies in: not one
    of a ``type`` other than CSS's, nor one whose ``media`` matches no screen (``print``, ``not
    all``)."""
    sheets = []
    for node in tree.css("style"):
        kind = (node.attributes.get("type") or "").strip().lower()
        if kind and kind != "text/css":
            continue
        media = (node.attributes.get("media") or "").strip()
        views = media_views(media) if media else ALL_VIEWS
        if views:
            sheets.append((node.text(deep=True)[:MAX_STYLE_CHARS], views))
    return sheets


def visible_text(markup: str, marked: bool = False) -> str:
    """The text a mail client shows for ``markup``, whitespace collapsed, lines kept. Quotations
    (``<blockquote type=cite>``, the webmail quote classes) are ``>`` lines; a line of the text
    that begins with ``>`` itself is no quotation, and where ``marked`` it begins with
    ``LITERAL_MARK`` so that :func:`.quotes.drop_quoted` keeps it (the caller removes the mark)."""
    tree = LexborHTMLParser(_without_reopening(markup))
    sheet = StyleSheet(_sheets(tree))
    root = tree.root
    if root is None:
        return ""
    # Explicit stack: spam nests elements thousands deep. A str entry is text to emit on the way out.
    # Each element entry carries what selectors see of its parent (``Element``, only where the
    # message has style rules to match) and, per view (:data:`.css.VIEW_WIDTHS`: two where
    # ``@media`` rules tell a phone from a desktop, else one), what its text inherits (``_Ink``),
    # None where that view does not show it. Text is read if any view shows it.
    views = len(VIEW_WIDTHS) if sheet.views_differ else 1
    # custom properties matter only where used; their substitution is bounded per message
    variables = VariableBudget() if "var(" in markup or "VAR(" in markup else None
    # A page coloured by rules for html, body or :root, which some clients apply and others drop:
    # its ground is unknown, and text on it counts as seen (white text on a black page is read).
    start = _Ink(_BLACK, None if sheet.colours_page else _WHITE)
    out: list[str] = []
    height = _Height(out)
    # The last item is the first line of the block being read where its indent starts it off the page.
    stack: list[tuple[LexborNode, tuple[_Ink | None, ...], Element | None, _FirstLine | None] | str] = [
        (root, (start,) * views, None, None)
    ]
    while stack:
        entry = stack.pop()
        if isinstance(entry, str):
            out.append(entry)
            continue
        node, inks, parent, line = entry
        tag = node.tag or ""
        if tag.startswith(_PLAIN_PREFIX):
            tag = tag[len(_PLAIN_PREFIX) :]
        if tag == "-text":
            text = node.text_content or ""
            if views == 1:  # the common case, without a list per text
                seen = [] if inks[0] is None or inks[0].unseen else [inks[0]]
            else:
                seen = [ink for ink in inks if ink is not None and not ink.unseen]
            # white space separates words in any colour
            if not text.strip() or any(not ink.indented_away for ink in seen):
                out.append(text)
            elif seen and line is not None:
                out.append(line.drawn(text))
            else:
                height.lines += 1 + len(text) // height.CHARACTERS  # unseen text takes room too
            continue
        if tag in _SKIPPED:
            continue
        attributes = node.attributes
        inline = attributes.get("style") or ""
        element = Element(tag, attributes, parent) if sheet else None
        styles = sheet.styles(element, inline) if element else (css_declarations(inline)[0],) * views
        if styles[0] or views > 1:  # most elements have no style at all
            styles = tuple(_as_laid_out(tag, style) for style in styles)
        if tag in _PAGE_TAGS:
            attributes = {name: value for name, value in attributes.items() if name != "hidden"}
            styles = tuple(_page_style(style) for style in styles)
            inks = _page_inks(inks, tag, attributes, styles, variables)
        elif views == 1:  # the common case, without a generator per element
            inks = (_ink_under(inks[0], tag, attributes, styles[0], variables),)
            if inks[0] is None:
                continue
        else:
            inks = tuple(
                _ink_under(ink, tag, attributes, style, variables)
                for ink, style in zip(inks, styles, strict=True)
            )
            if all(ink is None for ink in inks):
                continue
        if styles[0] or tag == "img":
            moved = _raised(styles[0]) if styles[0] else 0.0
            if moved >= -_OFF_THE_PAGE and moved > height():
                continue  # raised above the top of the page
            height.add(tag, attributes, styles[0])
        if tag == "img":
            alt = attributes.get("alt")  # drawn as an image, whatever the text colour
            if alt and not _tiny(attributes, styles[0]):
                out.append(f" {alt} ")
            continue
        if tag in ("svg", "input", "select"):  # pictures and fields that draw text of their own
            if any(ink is not None and not ink.invisible for ink in inks):
                drawn = _svg_text(node) if tag == "svg" else _field_text(attributes) if tag == "input" else ""
                out.append(f" {drawn or _select_text(node)} ")
            continue
        separator = _separator(tag, styles[0].get("display", ""))
        if separator == "\n" and line is not None:
            line.end()  # a <br> or a block inside ends the first line of the block around it
        if separator and tag != "br":  # a block, a cell, an inline block: lines of its own
            ink = next(ink for ink in inks if ink is not None)
            line = _FirstLine(ink) if ink.indented_away else None
        if _overrides_to_the_left(tag, attributes, styles[0]):
            out.append(_REVERSED_BEGIN)
            stack.append(_REVERSED_END)
        if _is_quotation(tag, attributes):
            out.append(_QUOTE_BEGIN)
            stack.append(_QUOTE_END)
        out.append(separator)
        stack.append("" if tag == "br" else separator)
        if sheet.generates and element is not None:  # text drawn by ::before and ::after rules
            out.append(_generated(sheet, element, "before", inks, tag, attributes))
            stack.append(_generated(sheet, element, "after", inks, tag, attributes))
        children = []
        child = node.child
        while child is not None:
            children.append(child)
            child = child.next
        if tag == "details" and "open" not in attributes:  # closed: its summary alone is drawn
            children = [child for child in children if child.tag == "summary"][:1]
        stack.extend((child, inks, element, line) for child in reversed(children))
    text = _BLANK_LINES.sub("\n\n", "\n".join(_quoted_lines(_as_drawn("".join(out))))).strip()
    return text if marked else text.replace(LITERAL_MARK, "")


def _separator(tag: str, display: str) -> str:
    """What sets an element's text apart from its neighbours': a line for a block, a space for a
    cell or an inline block, nothing for inline text. The element's ``display`` decides where it
    says (``<div style="display:inline">Vi</div><div style="display:inline">agra</div>`` is one
    word on screen), its tag's default otherwise."""
    if tag == "br":
        return "\n"
    if display == "inline":  # declarations() has taken "!important" off
        return ""
    if display in _SPACED_DISPLAYS:
        return " "
    if display in _BLOCK_DISPLAYS:
        return "\n"
    return "\n" if tag in _BLOCK_TAGS else " " if tag in _CELL_TAGS else ""


# What CSS does not apply to an inline box (text in the line, a <span> or <b> or <a> as it comes):
# its width and height, its vertical margins, its overflow, a transform, a clip, a first line's
# indent. A browser ignores them there, so "<span style='height:0;overflow:hidden'>" shows its text.
_BOX_ONLY = frozenset(
    {
        *("width", "height", "min-width", "min-height", "max-width", "max-height", "overflow"),
        *("overflow-x", "overflow-y", "transform", "margin-top", "margin-bottom", "clip", "text-indent"),
    }
)
_ATOMIC = frozenset({"img", "input", "button", "select", "textarea", "video", "object", "embed", "marquee"})


def _as_laid_out(tag: str, declarations: dict[str, str]) -> dict[str, str]:
    """An element's declarations less those that do not apply to it: an inline box's sizes, vertical
    margins, overflow and transform (an element placed ``absolute`` or ``fixed``, or floated, is laid
    out as a block, and keeps them; so do pictures and form fields, boxes of their own)."""
    if tag in _ATOMIC or not (declarations.keys() & _BOX_ONLY):
        return declarations  # nearly every element: nothing to drop
    if _separator(tag, declarations.get("display", "")) or declarations.get("position", "") in _ESCAPING:
        return declarations
    if declarations.get("float", "none") in ("left", "right", "inline-start", "inline-end"):
        return declarations
    return {name: value for name, value in declarations.items() if name not in _BOX_ONLY}


# What an inline SVG picture keeps without drawing: tooltips, definitions drawn only where used.
_SVG_UNDRAWN = frozenset(
    {"title", "desc", "defs", "symbol", "style", "script", "mask", "clippath", "pattern"}
)
_TEXT_FIELDS = frozenset({"", "text", "search", "email", "url", "tel"})
_BUTTONS = frozenset({"submit", "button", "reset"})


def _svg_text(svg: LexborNode) -> str:
    """The text an inline SVG picture draws (Apple Mail, iOS Mail and Thunderbird draw SVG): its
    ``<text>`` elements, ``<tspan>`` and ``<textPath>`` inside them, each a word apart."""
    texts: list[str] = []
    stack = [svg.child]
    while stack:
        node = stack.pop()
        while node is not None:
            tag = (node.tag or "").lower()
            if tag == "text":
                texts.append(node.text(deep=True))
            elif tag not in _SVG_UNDRAWN and node.child is not None:
                stack.append(node.child)  # read after this level: order within the picture matters little
            node = node.next
    return " ".join(texts)


def _select_text(select: LexborNode) -> str:
    """What a ``<select>`` shows: its selected option (the last marked ``selected``, else the first
    that is not disabled), or every option where it is a list box (``multiple``, ``size`` over 1).
    An option's ``label`` is drawn instead of its text."""
    options = select.css("option")
    attributes = select.attributes
    try:
        rows = int((attributes.get("size") or "1").strip())
    except ValueError:
        rows = 1
    if "multiple" not in attributes and rows <= 1:
        chosen = [option for option in options if "selected" in option.attributes][-1:]
        chosen = chosen or [option for option in options if "disabled" not in option.attributes][:1]
        options = chosen
    return " ".join(option.attributes.get("label") or option.text(deep=True) for option in options)


def _field_text(attributes: dict[str, str | None]) -> str:
    """What a form field shows (Apple Mail and Outlook draw forms): a text field's value, or its
    placeholder while it has none; a button's label. A hidden field, a box or a file picker: nothing."""
    kind = (attributes.get("type") or "").strip().lower()
    if kind in _BUTTONS:
        return attributes.get("value") or ""
    if kind in _TEXT_FIELDS:
        return attributes.get("value") or attributes.get("placeholder") or ""
    return ""


# The page's own elements. Clients that show a message inside a page of their own (webmail) drop
# their styles and attributes, others apply them: what would hide the whole message (display,
# visibility, opacity, sizes, ``hidden``) is taken from the first, so the message is read; their
# colours from the second, unless the page's own text would then be unseen (_page_inks).
_PAGE_TAGS = frozenset({"html", "body"})
_PAGE_COLOURS = frozenset({"color", "background", "background-color", "background-image"})


def _page_style(declarations: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in declarations.items() if name in _PAGE_COLOURS or name[:2] == "--"}


def _page_inks(
    inks: tuple[_Ink | None, ...],
    tag: str,
    attributes: dict[str, str | None],
    styles: tuple[dict[str, str], ...],
    variables: VariableBudget | None,
) -> tuple[_Ink | None, ...]:
    """What the page's element passes on: its colours; where they leave its own text unseen (a
    black page of black text, white text on a white one), a ground that is unknown, so that the text
    drawn in either client is read (white on that black page, the black text where it is dropped)."""
    under: list[_Ink | None] = []
    for ink, style in zip(inks, styles, strict=True):
        drawn = _ink_under(ink, tag, attributes, style, variables)
        if drawn is not None and drawn.unseen:
            drawn = dataclasses.replace(drawn, ground=None)
        under.append(drawn if drawn is not None else ink)
    return tuple(under)


def _tiny(attributes: dict[str, str | None], declarations: dict[str, str]) -> bool:
    """Whether an image is drawn in a box of at most 2 pixels a side (a tracking pixel): its alt
    text, shown where pictures are blocked, has no room to be read."""
    for side in ("width", "height"):
        length = _pixels(declarations.get(side, "") or (attributes.get(side) or "x"))
        if length is not None and length <= 2:
            return True
    return False


def _ink_under(
    ink: _Ink | None,
    tag: str,
    attributes: dict[str, str | None],
    declarations: dict[str, str],
    variables: VariableBudget | None = None,
) -> _Ink | None:
    """What an element's text inherits in one view, None where the element is not shown there.
    ``variables``: where the message uses ``var()``, what resolving custom properties may still
    cost in it (None: they are not resolved)."""
    if ink is None:
        return None
    own: dict[str, str] | None = None
    authored_display = "display" in declarations  # even one whose var() is dropped below
    if variables is not None and (
        ink.variables or any(name.startswith("--") or "var(" in value for name, value in declarations.items())
    ):
        declarations, own = with_variables(declarations, dict(ink.variables), variables)
    if _hides(declarations):
        return None
    if ("hidden" in attributes or (tag == "dialog" and "open" not in attributes)) and not authored_display:
        return None  # ``hidden`` is the browser's own display:none, which an author's display undoes
    return ink.under(tag, attributes, declarations, own)


def _generated(
    sheet: StyleSheet,
    element: Element,
    pseudo: str,
    inks: tuple[_Ink | None, ...],
    tag: str,
    attributes: dict[str, str | None],
) -> str:
    """The text an element's ``::before`` or ``::after`` draws where a view shows it, spaced off."""
    for ink, declarations in zip(inks, sheet.generated(element, pseudo), strict=True):
        if not declarations.get("content"):
            continue
        drawn = _ink_under(ink, tag, {}, declarations)
        if drawn is not None and not drawn.invisible:
            text = generated_text(declarations["content"], attributes)
            return f" {text} " if text.strip() else ""
    return ""


def _overrides_to_the_left(tag: str, attributes: dict[str, str | None], declarations: dict[str, str]) -> bool:
    if tag == "bdo":
        return (attributes.get("dir") or "").strip().lower() == "rtl"
    return (
        declarations.get("unicode-bidi", "") == "bidi-override" and declarations.get("direction", "") == "rtl"
    )


def _as_drawn(text: str) -> str:
    """The collected text with the runs drawn right to left reversed, as a reader reads them (an
    override inside another is part of its run, as the Unicode bidi algorithm draws it;
    quotation markers inside one are dropped). One pass: the pieces of an outermost run are
    gathered once, however deep its overrides nest (4,000 nested ``<bdo>`` around 300 KB of text
    copied the text at every level: 2.4 s)."""
    if _REVERSED_BEGIN not in text:
        return text
    out: list[str] = []
    run: list[str] = []  # the pieces of the outermost run being read
    depth = 0
    for piece in re.split(r"(\x00[<>])", text):
        if piece == _REVERSED_BEGIN:
            depth += 1
        elif piece == _REVERSED_END:
            if depth == 1:
                out.append("".join(run).replace(_QUOTE_BEGIN, "").replace(_QUOTE_END, "")[::-1])
                run = []
            depth = max(0, depth - 1)
        elif depth:
            run.append(piece)
        else:
            out.append(piece)
    out.extend(run)  # not closed (cannot happen: every begin has its end on the stack)
    return "".join(out)


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
                    if not depth and words.startswith(">"):
                        words = LITERAL_MARK + words  # text that begins with ">": no quotation
                    lines.append(("> " * depth + words) if words else "")
    return lines
