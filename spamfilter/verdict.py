"""The verdict: how one P(spam) becomes what a mail system reads and acts on.

Every front end (``filter``, pipeline mode, the spamd service, the milter, the Ray engine) and
``eval`` ask one ``Decision``, made once from the model's threshold and the options, for a
``Verdict``; so the label, the score, the tagged bytes and the milter's action for one message
are the same wherever it was classified.

The scale is SpamAssassin's, the numbers ``spamc -c`` prints: P(spam) from 0 to the model's
threshold maps linearly onto 0-5, from the threshold to 1 onto 5-10, so ``required`` always
reads 5.0 (the default that rules and clients assume: Exim's ``$spam_score_int > 50``, rspamd's
``/ 5.0``) and a message is spam exactly when its score is 5.0 or more. With the threshold 0.5
the score is 10 x P. One decimal, as spamc prints it, rounded towards the verdict.

The tagged message carries, at the top of its header block (``<prefix>`` is ``X-Spam`` unless
``--header-prefix`` says otherwise)::

    X-Spam-Flag: YES
    X-Spam-Status: Yes, score=9.7 required=5.0 tests=GPT2_SPAM_CLASSIFIER
        spam_probability=0.972 version=spamfilter-0.1.0            (one line)
    X-Spam-Level: *********
    X-Spam-Report: P(spam)=0.972; phrases towards spam, log-odds:   (only where explained)
        +2.41 "WIN a FREE prize"
        ...

The Report field is there only where the Decision's ``explain`` policy (off, spam, all) says
the verdict is explained and the caller passes the explanation (:mod:`spamfilter.explain`
computes it where the scores are computed): a summary line, then one folded line per phrase,
printable ASCII only, at most ``MAX_REPORT_CHARS`` in all. Its P(spam) is the verdict's, so the
Report never disagrees with the Status beside it.

``spam_probability`` keeps P(spam) to 3 decimals for scripts (more would print the float noise
by which one message's P(spam) differs with the batch it was scored in: 0.68525 read 0.6852
or 0.6853 in the service). Before the new fields go in, the
fields of the same prefix that SpamAssassin writes are removed (Flag, Status, Level, Report,
Checker-Version): with the default prefix a message SpamAssassin tagged earlier carries one
verdict, this one, never a ``Flag: NO`` beside SpamAssassin's 15 stars; with another prefix
(e.g. ``X-Spamfilter``) SpamAssassin's fields are left as they are and both verdicts can be read.

Standard library only: this is on the cold-start path of pipeline mode.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import __version__
from .errors import UsageError
from .mail.headers import replace_fields

if TYPE_CHECKING:
    from .explain import Explanation

REQUIRED = 5.0  # the score of the model's threshold, as spamd clients see it
MAX_SCORE = 10.0  # P(spam) = 1
RULE_NAME = "GPT2_SPAM_CLASSIFIER"  # the one "rule" (SYMBOLS, REPORT, X-Spam-Status tests=)
VERSION_TAG = f"spamfilter-{__version__}"
DEFAULT_PREFIX = "X-Spam"
EXPLAIN_POLICIES = ("off", "spam", "all")
# The fields SpamAssassin writes under its prefix: all of them go before this filter's are added.
SA_FIELDS = ("Flag", "Status", "Level", "Report", "Checker-Version")
# A bound on the Report value whatever the explanation holds (5 phrases of 60 characters fold
# into about 400): a header field is never a channel for a message's text at length.
MAX_REPORT_CHARS = 1000
_FOLD = "\n\t"  # the Report's folds as fields() gives them; tag() writes the message's line ending
_REPORT_LINE = re.compile(r"^[ -~]{1,200}$")
_PREFIX = re.compile(r"^[!-9;-~]{1,60}$")  # a header field name's characters, room for '-Checker-Version'


def sa_score(probability: float, threshold: float) -> float:
    """P(spam) on SpamAssassin's scale (see the module's docstring): monotonic in P, the threshold
    at 5.0, one decimal rounded towards the verdict (up for spam, down otherwise), so that ``score
    >= 5.0`` (Exim's and spamc's test) holds exactly when ``probability >= threshold``."""
    if probability >= threshold:
        raw = MAX_SCORE if threshold >= 1 else REQUIRED + 5 * (probability - threshold) / (1 - threshold)
        return max(_round_up(raw), REQUIRED)
    raw = REQUIRED * probability / threshold  # threshold > probability >= 0 here
    return min(_round_down(raw), REQUIRED - 0.1)


def _round_up(value: float) -> float:
    # round(…, 6) first: 10 * 0.7 is 7.000000000000001, which must not become 7.1
    return round(math.ceil(round(value * 10, 6)) / 10, 1)


def _round_down(value: float) -> float:
    return round(math.floor(round(value * 10, 6)) / 10, 1)


@dataclass(frozen=True)
class Verdict:
    """One message's verdict. ``score``/``required`` are what ``spamc -c`` prints."""

    probability: float
    threshold: float  # the cut it was judged by, on the P(spam) scale
    spam: bool
    score: float
    required: float = REQUIRED

    @property
    def stars(self) -> str:
        """X-Spam-Level: one star per whole point, as SpamAssassin writes it (none below 1.0)."""
        return "*" * int(self.score)

    @property
    def label(self) -> str:
        return "spam" if self.spam else "not spam"


@dataclass(frozen=True)
class Decision:
    """How P(spam) becomes a verdict, made once from the model's threshold and the options.

    ``threshold`` overrides the model's (``model_threshold``, spamfilter.json); ``cut`` is the one
    that applies. ``reject_above`` / ``quarantine_above`` are the milter's cut-offs on the same
    scale as the score; ``explain`` says which verdicts carry an explanation (off, spam, all).
    A Decision made before the model is loaded (pipeline mode, the service) is bound to it with
    ``for_model``.
    """

    model_threshold: float = 0.5
    threshold: float | None = None
    header_prefix: str = DEFAULT_PREFIX
    reject_above: float | None = None
    quarantine_above: float | None = None
    explain: str = "off"
    version: str = VERSION_TAG

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.header_prefix):
            raise UsageError(
                f"--header-prefix {self.header_prefix!r} is not a header field name (e.g. X-Spamfilter)"
            )
        if self.explain not in EXPLAIN_POLICIES:
            raise UsageError(f"explanations {self.explain!r}: choose one of {', '.join(EXPLAIN_POLICIES)}")
        if any(ch.isspace() or not ch.isprintable() for ch in self.version):
            # A line break would let the caller inject headers; a space would break key=value items.
            raise ValueError(f"version must not contain whitespace or control characters: {self.version!r}")
        for name, value in (("--threshold", self.threshold), ("the model's threshold", self.model_threshold)):
            if value is not None and not 0 <= value <= 1:  # NaN fails this too: no message would be judged
                raise UsageError(f"{name} {value!r} is not a probability from 0 to 1")
        cutoffs = (("--reject-above", self.reject_above), ("--quarantine-above", self.quarantine_above))
        for option, value in cutoffs:
            if value is not None and not REQUIRED <= value <= MAX_SCORE:
                raise UsageError(
                    f"{option} {value:g} is outside {REQUIRED:.1f}-{MAX_SCORE:.1f}: it is a score on "
                    f"SpamAssassin's scale, where {REQUIRED:.1f} is the model's threshold "
                    "(below it, it would act on mail the model calls clean)"
                )

    def for_model(self, model_threshold: float) -> Decision:
        """This decision for a model whose own threshold is ``model_threshold`` (a load, a reload)."""
        return replace(self, model_threshold=model_threshold)

    @property
    def cut(self) -> float:
        """The P(spam) at or above which a message is spam: the override, else the model's."""
        return self.model_threshold if self.threshold is None else self.threshold

    def verdict(self, probability: float) -> Verdict:
        cut = self.cut
        return Verdict(probability, cut, probability >= cut, sa_score(probability, cut))

    # --- the tagged message ---------------------------------------------------------------

    def name(self, field: str) -> str:
        return f"{self.header_prefix}-{field}"

    def removed_names(self) -> tuple[str, ...]:
        """The fields taken out of a message before its new ones go in."""
        return tuple(self.name(field) for field in SA_FIELDS)

    def status(self, verdict: Verdict) -> str:
        """The Status value, SpamAssassin style, so that rules such as ``^X-Spam-Status: Yes`` or
        ``score=`` keep working; P(spam) in a field of its own for scripts."""
        value = (
            f"{'Yes' if verdict.spam else 'No'}, score={verdict.score:.1f} required={verdict.required:.1f} "
            f"tests={RULE_NAME} spam_probability={verdict.probability:.3f}"
        )
        return value + (f" version={self.version}" if self.version else "")

    def fields(self, verdict: Verdict, explanation: Explanation | None = None) -> list[tuple[str, str]]:
        """(name, value) of the new fields, top down; the milter inserts exactly these. The
        Report field follows where ``explains(verdict)`` and an explanation is given; its value is
        folded with LF + tab (:meth:`tag` writes the message's own line ending)."""
        fields = [
            (self.name("Flag"), "YES" if verdict.spam else "NO"),
            (self.name("Status"), self.status(verdict)),
            (self.name("Level"), verdict.stars),
        ]
        if explanation is not None and self.explains(verdict):
            fields.append((self.name("Report"), self.report(verdict, explanation)))
        return fields

    def report(self, verdict: Verdict, explanation: Explanation) -> str:
        """The Report value for this verdict: the explanation's phrases, its P(spam) and
        direction the verdict's (an explanation scored in another batch may differ in the float
        noise), folded with LF + tab, checked safe and bounded here whatever the caller passed."""
        from .explain import report_header  # numpy: loaded only where explanations are made

        value = report_header(
            replace(explanation, probability=verdict.probability, threshold=verdict.threshold)
        )
        lines = value.split(_FOLD)
        if not all(_REPORT_LINE.match(line) for line in lines):
            raise ValueError("an explanation's report must be printable ASCII lines")
        while len(value) > MAX_REPORT_CHARS and len(lines) > 1:
            lines.pop()
            value = _FOLD.join(lines)
        return value[:MAX_REPORT_CHARS]

    def tag(self, raw: bytes, verdict: Verdict, explanation: Explanation | None = None) -> bytes:
        """raw with its earlier fields of this prefix removed and the new ones at the top of the
        header block (after an mbox From_ line), in the message's own line ending; every other
        byte as it was. ``explanation``: the Report field, where the policy explains this verdict."""
        newline = raw.find(b"\n")
        eol = b"\r\n" if newline > 0 and raw[newline - 1] == 0x0D else b"\n"
        fields = [
            (name.encode("ascii"), value.encode("ascii").replace(b"\n", eol))
            for name, value in self.fields(verdict, explanation)
        ]
        removed = frozenset(name.lower().encode("ascii") for name in self.removed_names())
        return replace_fields(raw, removed, fields)

    # --- what the MTA does with it -----------------------------------------------------------

    def milter_action(self, verdict: Verdict) -> str:
        """``reject`` (550 during SMTP), ``quarantine`` (tagged and held) or ``tag``."""
        if self.reject_above is not None and verdict.score >= self.reject_above:
            return "reject"
        if self.quarantine_above is not None and verdict.score >= self.quarantine_above:
            return "quarantine"
        return "tag"

    def explains(self, verdict: Verdict) -> bool:
        """Whether this verdict carries an explanation (the Report field, spamd's REPORT): the
        policy ``explain`` is off, spam (spam verdicts only) or all."""
        return self.explain == "all" or (self.explain == "spam" and verdict.spam)


def insert_spam_headers(
    raw: bytes, probability: float, threshold: float = 0.5, header_prefix: str = DEFAULT_PREFIX
) -> bytes:
    """raw tagged as the filter tags it, for a P(spam) and a threshold (Python API)."""
    decision = Decision(model_threshold=threshold, header_prefix=header_prefix)
    return decision.tag(raw, decision.verdict(probability))
