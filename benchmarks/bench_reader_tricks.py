"""Tricks against the reader (what a mail client shows against what the filter reads), scored as
``spamfilter filter`` scores them, at fixed numbers of test ham (``bench_tricks``'s measure) on
cached ``bench_recipe`` models.

Each test spam is rebuilt as one HTML part (its Subject kept, its reader's text as the offer):

- ``offer shown by the cascade``: the offer in ``<p class=offer>`` under ``.offer {display:none}
  p.offer {display:block}`` (a browser shows it: the more specific rule wins);
- ``offer in a font-size:0 table``: the offer in a cell that sets its own font size, inside a
  table of ``font-size:0`` (how newsletters remove the gaps between cells);
- ``offer hidden from print``: the offer under ``@media print { .offer {display:none} }``;
- ``offer shown on phones only``: ``.offer {display:none}``, and ``display:block`` under
  ``@media (max-width: 600px)`` (the spam's readers on phones see it);
- ``offer drawn by ::before``: each line of the offer as the ``content`` of an empty paragraph's
  ``::before`` rule (Apple Mail and Thunderbird draw it);
- ``offer written right to left``: each line reversed, in ``<bdo dir=rtl>`` (drawn as written);
- ``padding hidden by rules``: the offer shown as it is, after three ham paragraphs hidden by a
  class's colour (white on white), a descendant rule and an attribute rule;
- ``offer in HTML, newsletter in plain text``: a multipart/alternative whose HTML part (what mail
  clients show) holds the offer and whose plain part three ham paragraphs;
- ``offer spelled out``: half the words of three letters or more, in the Subject and the offer,
  spelled out letter by letter with a space between letters ("V I A G R A"; next to another such
  word it runs on: "F R E E O F F E R");
- ``offer spelled in table cells``: three in ten of the offer's words of four letters or more written
  one letter a cell, in a table of their own (a client draws the word on a line of its own, with
  gaps between its letters);
- ``offer in styles a browser drops``: the offer's lines in paragraphs styled
  ``/* ; display:none ; */``, ``x display:none`` or ``display:none\\;`` in turn (a comment, a
  declaration that is not ``name: value``, an escaped semicolon: each element is shown);
- ``padding hidden by alpha/scale/zoom/clip-path``: the offer after four ham paragraphs in
  ``color:#fff0``, ``transform:scale(0.01)``, ``zoom:2%`` and ``clip-path:circle(0)``;
- ``offer placed where rules do not hide it``: the offer's lines in turn in a paragraph of the
  page's flow styled ``left:-9999px`` (offsets move only positioned elements), in an ``absolute``
  span inside a ``height:0; overflow:hidden`` box that is not positioned, and in a paragraph that
  sets ``text-indent:0`` inside a ``text-indent:-9999px`` block (each shown by a browser);
- ``padding hidden by a custom property``: the offer after three ham paragraphs in
  ``color: var(--bg)`` under a wrapper that sets ``--bg: #ffffff`` on a white page;
- ``offer below an indented first line``: a block of ``text-indent:-9999px`` whose first line is
  eight ham words and whose next lines, after a ``<br>``, are the offer (the indent moves the first
  line alone: a browser draws the rest);
- ``offer raised over a picture``: the offer in a block of ``margin-top:-760px`` after an 800 px
  high banner (drawn over the picture, as text on a banner is);
- ``offer in inline boxes styled as boxes of no room``: the offer's lines in turn in a ``<span>`` of
  ``width:0;height:0;overflow:hidden``, a ``<b>`` of ``transform:scale(0)`` and a ``<span>`` of
  ``margin-top:-9999px`` (none of which applies to an inline box: a browser draws each line);
- ``offer in 1 px text scaled up``: the offer's lines in turn in blocks of ``font-size:1px`` drawn
  16 times larger by ``transform:scale(16)`` or ``zoom:16``;
- ``offer in SVG text and form fields``: the offer's lines in turn as the ``<text>`` of an inline
  SVG picture and as the value of a read-only text field without a border;
- ``offer in white or transparent text outlined or inverted``: the offer's lines in turn in white
  text outlined in black (``-webkit-text-stroke``), white text under ``filter:invert(1)``, and
  transparent text outlined in grey;
- ``offer's words written shuffled, drawn in order by flex order``: each line of the offer a flex
  box whose items are its words, written in a shuffled order and drawn in the line's own order by
  each item's ``order``;
- ``offer in a text attachment behind eight ham words``: a multipart/mixed whose HTML body is eight
  ham words and whose ``offer.txt`` attachment (text/plain, shown below the body by Thunderbird
  and Apple Mail) is the offer;
- ``offer in white on a page coloured by a body rule``: the offer in white text on a page that
  ``body { background: #111 }`` colours (Apple Mail, Thunderbird and Outlook apply the rule);
- ``offer hidden under conditions a desktop does not meet``: the offer's lines in turn hidden by
  rules under ``@media (min-resolution: 9999dpi)``, ``@supports (x-unknown: 1)`` and ``@media
  (hover: none)`` (a desktop client with a mouse shows every line);
- ``offer sent as text/enriched``: the message one text/enriched part (RFC 1896, drawn by
  Thunderbird and Apple Mail), each line of the offer in ``<bold>``;
- ``spam's Subject second behind a harmless one``: the control with a second Subject field before
  the spam's, five ham words (clients show the first or the last);
- ``offer under a harmless Subject``: the control with five ham words for its Subject (the
  spammer's own choice of Subject, not a trick against the reader);
- ``offer hidden by the page's own style``: the control's HTML in a ``<body text="#ffffff">`` or a
  ``<body style="display:none">`` (one or the other per spam: webmail drops them and shows the
  offer);
- ``offer in sizes and colours computed by calc() or oklch()``: the offer's lines in turn in a
  block of ``font-size:0``, of white text, or both, each line undoing it with a size or a colour
  that a client computes (``calc(1rem)``, ``oklch(0.2 0 0)``, ``max()`` with ``color-mix()``);
- ``as HTML`` (the control): the offer alone in the same HTML.

The tricks live here, not in ``spamfilter.evasion``, so that the same script can score the reader
of an earlier commit (``PYTHONPATH=<its checkout>:.``) against the same mail.

    python -m benchmarks.bench_reader_tricks --row members3-L1+links --seeds 123,7,11
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Callable, Sequence

import numpy as np

from spamfilter.mail import extract_text
from spamfilter.runtime import Classifier

from .bench_evasion import OUT, cpu_line, ham_pool, load_split
from .common import script_parser, table
from .mail_corpus import recipe_dir

HAM_ALLOWED = (1, 3)


def _message(subject: str, body: str) -> bytes:
    markup = f"<html><body>{body}</body></html>"
    return f"Subject: {subject}\nContent-Type: text/html; charset=utf-8\n\n{markup}".encode()


def _offer(body: str) -> str:
    return "<br>\n".join(html.escape(line) for line in body.split("\n"))


def _lines_in_turn(body: str, templates: Sequence[str], joiner: str = "") -> str:
    """The offer's lines (its empty ones left out), each escaped into the next of ``templates`` in
    turn (``{}`` marks where), joined by ``joiner``."""
    lines = [line for line in body.split("\n") if line.strip()]
    return joiner.join(
        templates[n % len(templates)].format(html.escape(line)) for n, line in enumerate(lines)
    )


def as_html(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    return _message(subject, f"<p>{_offer(body)}</p>")


def shown_by_cascade(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    style = "<style>.offer { display: none } p.offer { display: block }</style>"
    return _message(subject, f"{style}<p class=offer>{_offer(body)}</p>")


def in_font_size_zero_table(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    cell = f'<td style="font-size:14px">{_offer(body)}</td>'
    return _message(subject, f'<table style="font-size:0"><tr>{cell}</tr></table>')


def hidden_from_print(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    style = "<style>@media print { .offer { display: none } }</style>"
    return _message(subject, f"{style}<p class=offer>{_offer(body)}</p>")


def shown_on_phones_only(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    style = "<style>.offer { display: none } @media (max-width: 600px) { .offer { display: block } }</style>"
    return _message(subject, f"{style}<p class=offer>{_offer(body)}</p>")


def drawn_by_before(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    lines = [line for line in body.split("\n") if line.strip()][:200]
    quoted = [line.replace("\\", "\\\\").replace('"', '\\"') for line in lines]
    rules = "".join(f'.l{n}::before {{ content: "{line}" }}' for n, line in enumerate(quoted))
    # markup characters in a line would end the <style>: written as CSS escapes
    rules = rules.replace("<", "\\3c ").replace(">", "\\3e ").replace("&", "\\26 ")
    return _message(
        subject, f"<style>{rules}</style>" + "".join(f"<p class=l{n}></p>" for n in range(len(lines)))
    )


def right_to_left(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    lines = [f"<bdo dir=rtl>{html.escape(line[::-1])}</bdo>" for line in body.split("\n")]
    return _message(subject, "<p>" + "<br>\n".join(lines) + "</p>")


def padding_hidden_by_rules(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    style = "<style>.pad { color: #ffffff } div .aside { display: none } [data-x] { font-size: 0 }</style>"
    pads = [html.escape(rng.choice(pool)) for _ in range(3)]
    padding = f"<p class=pad>{pads[0]}</p><div><p class=aside>{pads[1]}</p></div><p data-x=1>{pads[2]}</p>"
    return _message(subject, f"{style}{padding}<p>{_offer(body)}</p>")


def html_offer_plain_newsletter(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    plain = "\n\n".join(rng.choice(pool) for _ in range(3))
    markup = f"<html><body><p>{_offer(body)}</p></body></html>"
    parts = (
        f"--alt\nContent-Type: text/plain; charset=utf-8\n\n{plain}\n"
        f"--alt\nContent-Type: text/html; charset=utf-8\n\n{markup}\n--alt--\n"
    )
    return (
        f"Subject: {subject}\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=alt\n\n{parts}"
    ).encode()


_LONG_WORD = re.compile(r"[^\W\d_]{3,}")


def spelled_out(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    def spell(match: re.Match[str]) -> str:
        return " ".join(match.group(0)) if rng.random() < 0.5 else match.group(0)

    return _message(_LONG_WORD.sub(spell, subject), f"<p>{_offer(_LONG_WORD.sub(spell, body))}</p>")


def spelled_in_cells(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    def in_cells(word: str) -> str:
        if len(word) < 4 or not word.isalpha() or rng.random() >= 0.3:
            return html.escape(word)
        cells = "".join(f"<td>{html.escape(letter)}</td>" for letter in word)
        return f"<table><tr>{cells}</tr></table>"

    lines = [" ".join(in_cells(word) for word in line.split(" ")) for line in body.split("\n")]
    return _message(subject, "<p>" + "<br>\n".join(lines) + "</p>")


_DROPPED_STYLES = tuple(
    f'<p style="{style}">{{}}</p>'
    for style in ("/* ; display:none ; */", "x display:none", "display:none\\;")
)
_HIDING_STYLES = ("color:#fff0", "transform:scale(0.01)", "zoom:2%", "clip-path:circle(0)")


def in_styles_a_browser_drops(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    return _message(subject, _lines_in_turn(body, _DROPPED_STYLES))


def padding_hidden_by_alpha_scale_zoom(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    padding = "".join(f'<p style="{style}">{html.escape(rng.choice(pool))}</p>' for style in _HIDING_STYLES)
    return _message(subject, f"{padding}<p>{_offer(body)}</p>")


_UNHIDDEN = (
    '<p style="left:-9999px">{}</p>',
    '<div style="height:0;overflow:hidden"><span style="position:absolute">{}</span></div><br>',
    '<div style="text-indent:-9999px"><p style="text-indent:0">{}</p></div>',
)


def placed_where_rules_do_not_hide(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    return _message(subject, _lines_in_turn(body, _UNHIDDEN))


def padding_hidden_by_custom_property(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    padding = "".join(f'<p style="color: var(--bg)">{html.escape(rng.choice(pool))}</p>' for _ in range(3))
    return _message(subject, f'<div style="--bg: #ffffff">{padding}</div><p>{_offer(body)}</p>')


def below_an_indented_first_line(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    first = html.escape(" ".join(rng.choice(pool).split()[:8]))
    return _message(subject, f'<div style="text-indent:-9999px">{first}<br>{_offer(body)}</div>')


def raised_over_a_picture(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    picture = '<img src="http://img.example/banner.jpg" width="600" height="800">'
    return _message(subject, f'{picture}<div style="margin-top:-760px">{_offer(body)}</div>')


_INLINE_BOXES = (
    '<span style="width:0;height:0;overflow:hidden">{}</span>',
    '<b style="transform:scale(0)">{}</b>',
    '<span style="margin-top:-9999px">{}</span>',
)


def in_inline_boxes(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    return _message(subject, "<p>" + _lines_in_turn(body, _INLINE_BOXES, "<br>\n") + "</p>")


_SCALED_UP = (
    '<div style="font-size:1px;transform:scale(16);transform-origin:0 0">{}</div>',
    '<div style="font-size:1px;zoom:16">{}</div>',
)


def scaled_up_from_one_pixel(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    return _message(subject, _lines_in_turn(body, _SCALED_UP))


_DRAWN_ELSEWHERE = (
    '<svg width="600" height="24"><text x="0" y="18">{}</text></svg><br>',
    '<input type="text" size="80" readonly style="border:0" value="{}"><br>',
)


def in_svg_and_fields(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    return _message(subject, _lines_in_turn(body, _DRAWN_ELSEWHERE))


_DRAWN_ANYWAY = (
    '<span style="color:#fff;-webkit-text-stroke:1px #000">{}</span>',
    '<span style="color:#fff;filter:invert(1)">{}</span>',
    '<span style="color:transparent;-webkit-text-stroke:1px #333">{}</span>',
)


def outlined_or_inverted(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    return _message(subject, "<p>" + _lines_in_turn(body, _DRAWN_ANYWAY, "<br>\n") + "</p>")


def words_ordered_by_flex(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    lines = []
    for line in body.split("\n"):
        words = line.split()
        if not words:
            continue
        placed = list(enumerate(words))
        rng.shuffle(placed)  # written in this order, drawn in the order that ``order`` gives
        items = "".join(f'<span style="order:{n}">{html.escape(word)}&nbsp;</span>' for n, word in placed)
        lines.append(f'<div style="display:flex">{items}</div>')
    return _message(subject, "".join(lines))


def in_a_text_attachment(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    greeting = html.escape(" ".join(rng.choice(pool).split()[:8]))
    return (
        f"Subject: {subject}\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=sf-b\n\n"
        f"--sf-b\nContent-Type: text/html; charset=utf-8\n\n<html><body><p>{greeting}</p></body></html>\n"
        '--sf-b\nContent-Type: text/plain; charset=utf-8; name="offer.txt"\n'
        'Content-Disposition: attachment; filename="offer.txt"\n\n'
        f"{body}\n--sf-b--\n"
    ).encode()


def white_on_a_page_coloured_by_a_rule(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    style = "<style>body { background: #111 }</style>"
    return _message(subject, f'{style}<p style="color:#fff">{_offer(body)}</p>')


_UNDECIDED = ("@media (min-resolution: 9999dpi)", "@supports (x-unknown: 1)", "@media (hover: none)")


def hidden_under_an_undecided_condition(
    subject: str, body: str, rng: random.Random, pool: list[str]
) -> bytes:
    rules = " ".join(f"{when} {{ .o{n} {{ display: none }} }}" for n, when in enumerate(_UNDECIDED))
    styled = _lines_in_turn(body, [f"<p class=o{n}>{{}}</p>" for n in range(len(_UNDECIDED))])
    return _message(subject, f"<style>{rules}</style>{styled}")


def as_text_enriched(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    enriched = "\n\n".join(
        f"<bold>{line.replace('<', '<<')}</bold>" for line in body.split("\n") if line.strip()
    )
    return f"Subject: {subject}\nContent-Type: text/enriched; charset=utf-8\n\n{enriched}\n".encode()


def subject_behind_a_harmless_one(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    harmless = " ".join(rng.choice(pool).split()[:5])
    return f"Subject: {harmless}\n".encode() + as_html(subject, body, rng, pool)


def hidden_by_the_pages_own_style(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    markup = f"<p>{_offer(body)}</p>"
    page = ('<body text="#ffffff">', '<body style="display:none">')[rng.randrange(2)]
    head = f"Subject: {subject}\nContent-Type: text/html; charset=utf-8\n\n"
    return f"{head}<html>{page}{markup}</body></html>".encode()


_UNCOMPUTED = (
    '<div style="font-size:0"><span style="font-size:calc(1rem)">{}</span></div>',
    '<div style="color:#fff"><span style="color:oklch(0.2 0 0)">{}</span></div>',
    '<div style="font-size:0; color:#fff">'
    '<span style="font-size:max(15px, 1em); color:color-mix(in srgb, black 90%, white)">{}</span></div>',
)


def in_values_the_reader_cannot_compute(
    subject: str, body: str, rng: random.Random, pool: list[str]
) -> bytes:
    return _message(subject, _lines_in_turn(body, _UNCOMPUTED))


def under_a_harmless_subject(subject: str, body: str, rng: random.Random, pool: list[str]) -> bytes:
    return as_html(" ".join(rng.choice(pool).split()[:5]), body, rng, pool)


TRICKS: dict[str, Callable[[str, str, random.Random, list[str]], bytes]] = {
    "as HTML (control)": as_html,
    "offer shown by the cascade": shown_by_cascade,
    "offer in a font-size:0 table": in_font_size_zero_table,
    "offer hidden from print": hidden_from_print,
    "offer shown on phones only": shown_on_phones_only,
    "offer drawn by ::before": drawn_by_before,
    "offer written right to left": right_to_left,
    "padding hidden by rules": padding_hidden_by_rules,
    "offer in HTML, newsletter in plain text": html_offer_plain_newsletter,
    "offer spelled out": spelled_out,
    "offer spelled in table cells": spelled_in_cells,
    "offer in styles a browser drops": in_styles_a_browser_drops,
    "padding hidden by alpha/scale/zoom/clip-path": padding_hidden_by_alpha_scale_zoom,
    "offer placed where rules do not hide it": placed_where_rules_do_not_hide,
    "padding hidden by a custom property": padding_hidden_by_custom_property,
    "offer below an indented first line": below_an_indented_first_line,
    "offer raised over a picture": raised_over_a_picture,
    "offer in inline boxes styled as boxes of no room": in_inline_boxes,
    "offer in 1 px text scaled up": scaled_up_from_one_pixel,
    "offer in SVG text and form fields": in_svg_and_fields,
    "offer in white or transparent text outlined or inverted": outlined_or_inverted,
    "offer's words written shuffled, drawn in order by flex order": words_ordered_by_flex,
    "offer in a text attachment behind eight ham words": in_a_text_attachment,
    "offer in white on a page coloured by a body rule": white_on_a_page_coloured_by_a_rule,
    "offer hidden under conditions a desktop does not meet": hidden_under_an_undecided_condition,
    "offer sent as text/enriched": as_text_enriched,
    "spam's Subject second behind a harmless one": subject_behind_a_harmless_one,
    "offer under a harmless Subject": under_a_harmless_subject,
    "offer hidden by the page's own style": hidden_by_the_pages_own_style,
    "offer in sizes and colours computed by calc() or oklch()": in_values_the_reader_cannot_compute,
}


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--row", default="members3-L1+links")
    parser.add_argument("--seeds", default="123,7,11")
    parser.add_argument("--tricks", help="only these (comma-separated names; the control is always run)")
    args = parser.parse_args()
    chosen = {name for name in (args.tricks or "").split(",") if name}
    unknown = chosen - set(TRICKS)
    if unknown:
        raise SystemExit(f"unknown tricks: {', '.join(sorted(unknown))}")
    lines = []
    for seed in (int(s) for s in args.seeds.split(",")):
        split = load_split(seed)
        pool = ham_pool(split, OUT)
        folder = recipe_dir(seed) / args.row
        if not (folder / "spamfilter.json").is_file():
            raise SystemExit(
                f"{folder}: not trained (python -m benchmarks.bench_recipe --rows {args.row} --seed {seed})"
            )
        classifier = Classifier.load(folder)
        classifier.use_memory = False  # the reader is measured, not a memory of the training mail
        ham = np.sort(classifier.spam_probability([extract_text(raw) for raw in split.test_ham]))[::-1]
        texts = [extract_text(raw).partition("\n") for raw in split.test_spam]
        for name, trick in TRICKS.items():
            if chosen and name not in chosen and trick is not as_html:
                continue
            messages = [
                trick(subject, body, random.Random(f"{seed}:{name}:{n}"), pool)
                for n, (subject, _, body) in enumerate(texts)
            ]
            p = classifier.spam_probability([extract_text(raw) for raw in messages])
            lines.append([seed, name, *(f"{100 * float((p > ham[k]).mean()):.1f} %" for k in HAM_ALLOWED)])
    print(f"CPU: {cpu_line()}")
    print(table(["split", "change to the spam", *(f"recall at {k} test ham" for k in HAM_ALLOWED)], lines))


if __name__ == "__main__":
    main()
