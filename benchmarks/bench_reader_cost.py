"""What the reader (``spamfilter.mail.extract_text``) costs and changes, on the shared corpus.

Prints the time to read all 3,250 corpus messages (the fastest of ``--passes``), the time to read a
message of 8,000 hostile style attributes (each kind), the most style-rule
matching steps any one message needs (``css.MAX_MATCH_STEPS`` bounds them), and the time to render a
hostile stylesheet (256 universal rules over 20,000 elements) with the bound and without it.
``--save FILE`` writes the texts read; ``--compare FILE`` counts the messages whose text differs from
a saved reading (run the script once with an earlier reader on ``PYTHONPATH``, saving, then again).

    python -m benchmarks.bench_reader_cost --save /tmp/texts-now.json
    PYTHONPATH=<a folder with an earlier spamfilter/> python -m benchmarks.bench_reader_cost --save old.json
    python -m benchmarks.bench_reader_cost --compare old.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from spamfilter.mail import extract_text

from .bench_evasion import cpu_line
from .common import script_parser
from .mail_corpus import load_corpus


def hostile_markup() -> str:
    rules = "".join(f".a{n} * {{ color: red }}" for n in range(256))  # tried on every element
    return f"<style>{rules}</style>" + "<div>x</div>" * 20_000


# Style attributes written to make a declaration parser work: brackets to nest, escapes to decode,
# many short declarations, strings, comments (each about 190 characters).
_HOSTILE_STYLES = (
    ("open brackets", "(" * 190),
    ("escapes", "\\a" * 95),
    ("declarations", "a:b;" * 48),
    ("strings", "a:'x';" * 32),
    ("comment openers", "/*" * 95),
)


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--save", type=Path, help="write the texts read, as JSON")
    parser.add_argument("--compare", type=Path, help="count the texts that differ from this JSON")
    args = parser.parse_args()
    raws, labels = load_corpus()
    print(f"CPU: {cpu_line()}")
    times = []
    for _ in range(args.passes):
        started = time.perf_counter()
        texts = [extract_text(raw) for raw in raws]
        times.append(time.perf_counter() - started)
    print(f"extract_text of {len(raws)} messages: {min(times):.2f} s (fastest of {args.passes})")
    if args.save:
        args.save.write_text(json.dumps(texts))
    if args.compare:
        before = json.loads(args.compare.read_text())
        changed = [n for n, (a, b) in enumerate(zip(before, texts, strict=True)) if a != b]
        spam = sum(int(labels[n]) for n in changed)
        print(
            f"texts that differ from {args.compare}: {len(changed)} ({spam} spam, {len(changed) - spam} ham)"
        )
    for name, style in _HOSTILE_STYLES:
        raw = b"Subject: s\nContent-Type: text/html\n\n" + (f'<p style="{style}">x</p>' * 8000).encode()
        started = time.perf_counter()
        extract_text(raw)
        print(f"8,000 style attributes of {name}: {time.perf_counter() - started:.2f} s")
    try:
        from spamfilter.mail import css
        from spamfilter.mail.render import visible_text
    except ImportError:  # a reader from before css.py: no matching steps to count
        return
    made: list[css.StyleSheet] = []  # the style sheets read for one message
    original = css.StyleSheet.__init__

    def keep(self: css.StyleSheet, text: str) -> None:
        original(self, text)
        made.append(self)

    css.StyleSheet.__init__ = keep  # type: ignore[method-assign,assignment]  # counts the product's own steps
    steps = []
    for raw in raws:
        made.clear()
        extract_text(raw)
        steps.append(sum(css.MAX_MATCH_STEPS - sheet._steps for sheet in made))
    css.StyleSheet.__init__ = original  # type: ignore[method-assign]
    print(f"most matching steps of one message: {max(steps)} (bound {css.MAX_MATCH_STEPS})")
    markup = hostile_markup()
    for name, bound in (("with the bound", css.MAX_MATCH_STEPS), ("without", 10**12)):
        css.MAX_MATCH_STEPS = bound
        started = time.perf_counter()
        visible_text(markup)
        print(f"256 universal rules over 20,000 elements, {name}: {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
