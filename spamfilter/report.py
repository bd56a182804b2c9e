"""The errors of an evaluation, each with the phrases behind its verdict: a page to act on.

Lists the false positives (ham marked spam) and the missed spam of an evaluation, most confident
error first, each with its P(spam), its first line (the Subject, for mail) and the phrases that
pushed it towards the wrong verdict (:mod:`.explain`). Markdown or one self-contained HTML page
(no script, no external resource). Every character that comes from a message is escaped: a
message cannot add markup, links, table cells or lines to the page.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .explain import Direction, Explanation, explain_batch

if TYPE_CHECKING:
    from .runtime import Classifier

FORMATS = ("markdown", "html")
MAX_LISTED = 100  # errors listed per kind at most: each one costs an explanation
MAX_TITLE_CHARS = 120
EXPLAIN_BATCH = 8  # messages explained per call: bounds the rows of one model call
_SPACES = re.compile(r"\s+")
_MARKDOWN_PUNCTUATION = re.compile(r"""([!"#$%'()*+,\-./:=?@\[\\\]^_`{|}~])""")  # & < >: entities


@dataclass(frozen=True)
class Error:
    """One misclassified message: its index (or name), the evaluation's P(spam) for it and the
    explanation of its verdict."""

    name: str
    text: str
    label: int
    probability: float
    explanation: Explanation


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line: line breaks, control and format characters (bidirectional overrides
    included) become spaces, runs of spaces one; cut at ``limit`` characters with an ellipsis."""
    chars = [" " if ch.isspace() or unicodedata.category(ch)[0] in "CZ" else ch for ch in text]
    line = _SPACES.sub(" ", "".join(chars)).strip()
    if limit is not None and len(line) > limit:
        line = line[: max(1, limit - 1)].rstrip() + "\u2026"
    return line


def markdown_text(text: str, limit: int | None = None) -> str:
    """``text`` as literal markdown text on one line: every ASCII punctuation character
    backslash-escaped (CommonMark makes each one literal, ``|`` included, so table cells hold),
    then ``&`` ``<`` ``>`` as entities so that no renderer reads HTML in it."""
    escaped = _MARKDOWN_PUNCTUATION.sub(r"\\\1", one_line(text, limit))
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def html_text(text: str, limit: int | None = None) -> str:
    return html.escape(one_line(text, limit), quote=True)


def find_errors(
    texts: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    threshold: float,
    classifier: Classifier,
    names: Sequence[str] | None = None,
    top: int = 3,
    limit: int = MAX_LISTED,
) -> tuple[list[Error], list[Error], int, int]:
    """The false positives and the missed spam (at most ``limit`` of each, most confident first)
    explained, and how many of each there are in all."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if not len(texts) == len(y) == len(p) or (names is not None and len(names) != len(texts)):
        raise ValueError("texts, labels, probabilities (and names) must have one entry per message")
    false_positives = [int(i) for i in np.argsort(-p, kind="stable") if y[i] == 0 and p[i] >= threshold]
    missed = [int(i) for i in np.argsort(p, kind="stable") if y[i] == 1 and p[i] < threshold]
    chosen = false_positives[:limit] + missed[:limit]
    explanations: list[Explanation] = []
    kinds: tuple[tuple[Direction, list[int]], ...] = (
        ("spam", false_positives[:limit]),
        ("ham", missed[:limit]),
    )
    for kind, indices in kinds:
        for begin in range(0, len(indices), EXPLAIN_BATCH):
            batch = [texts[i] for i in indices[begin : begin + EXPLAIN_BATCH]]
            # towards the verdict the evaluation gave, whatever P(spam) the classifier gives now
            explanations.extend(explain_batch(classifier, batch, top, threshold, towards=kind))
    errors = [
        Error(names[i] if names is not None else f"#{i}", texts[i], int(y[i]), float(p[i]), explanation)
        for i, explanation in zip(chosen, explanations, strict=True)
    ]
    listed = min(limit, len(false_positives))
    return errors[:listed], errors[listed:], len(false_positives), len(missed)


def error_report(
    texts: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    threshold: float,
    classifier: Classifier,
    *,
    names: Sequence[str] | None = None,
    fmt: str = "markdown",
    top: int = 3,
    limit: int = MAX_LISTED,
    title: str = "Errors of the evaluation",
) -> str:
    """The page: ``labels`` 1 for spam, 0 for ham; ``probabilities`` the model's P(spam) for
    each text (as the evaluation computed them); ``threshold`` the verdict's cut."""
    if fmt not in FORMATS:
        raise ValueError(f"report format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    fps, missed, fp_count, missed_count = find_errors(
        texts, labels, probabilities, threshold, classifier, names, top, limit
    )
    hams = int(np.sum(np.asarray(labels) == 0))
    spams = len(texts) - hams
    summary = (
        f"{len(texts)} messages ({spams} spam, {hams} ham), threshold {threshold:.4f}: "
        f"false positives {fp_count}, missed spam {missed_count}."
    )
    sections = [
        ("False positives: ham marked spam", "phrases towards spam", fps, fp_count),
        ("Missed spam: spam marked ham", "phrases towards ham", missed, missed_count),
    ]
    render = _markdown if fmt == "markdown" else _html
    return render(title, summary, sections)


Section = tuple[str, str, list[Error], int]


def _shown(count: int, errors: list[Error]) -> str:
    return f" (the {len(errors)} most confident of {count})" if len(errors) < count else ""


def _markdown(title: str, summary: str, sections: list[Section]) -> str:
    # our own words (summary, headings) as they are; every text from a message escaped
    lines = [f"# {markdown_text(title)}", "", summary, ""]
    for heading, towards, errors, count in sections:
        lines += [f"## {heading}{_shown(count, errors)}", ""]
        if not errors:
            lines += ["None.", ""]
            continue
        lines += [
            f"| message | P(spam) | first line | {towards} (log-odds, P(spam) without) |",
            "| --- | --- | --- | --- |",
        ]
        for error in errors:
            phrases = "<br>".join(
                [f"memory {markdown_text(line, 200)}" for line in error.explanation.memory]
                + [
                    f"{p.log_odds:+.2f}, {p.without:.3f}: {markdown_text(p.text, 200)}"
                    for p in error.explanation.phrases
                ]
            )
            first = error.text.split("\n", 1)[0]
            lines.append(
                f"| {markdown_text(error.name, 80)} | {error.probability:.4f} | "
                f"{markdown_text(first, MAX_TITLE_CHARS)} | {phrases or 'none'} |"
            )
        lines.append("")
    return "\n".join(lines)


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}"
    "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:4px;"
    "vertical-align:top;text-align:left}ol{margin:0;padding-left:1.2em}.n{white-space:nowrap}"
)


def _html(title: str, summary: str, sections: list[Section]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # no script, no outside resource: the page can be opened from a mail archive
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        f"<title>{html_text(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html_text(title)}</h1>",
        f"<p>{html_text(summary)}</p>",
    ]
    for heading, towards, errors, count in sections:
        out.append(f"<h2>{html_text(heading + _shown(count, errors))}</h2>")
        if not errors:
            out.append("<p>None.</p>")
            continue
        out.append(
            "<table><tr><th>message</th><th>P(spam)</th><th>first line</th>"
            f"<th>{html_text(towards)} (log-odds, P(spam) without)</th></tr>"
        )
        for error in errors:
            items = "".join(
                [f"<li>memory {html_text(line, 200)}</li>" for line in error.explanation.memory]
                + [
                    f'<li><span class="n">{p.log_odds:+.2f}, {p.without:.3f}</span>: '
                    f"{html_text(p.text, 200)}</li>"
                    for p in error.explanation.phrases
                ]
            )
            first = error.text.split("\n", 1)[0]
            out.append(
                f"<tr><td>{html_text(error.name, 80)}</td><td>{error.probability:.4f}</td>"
                f"<td>{html_text(first, MAX_TITLE_CHARS)}</td>"
                f"<td>{f'<ol>{items}</ol>' if items else 'none'}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
