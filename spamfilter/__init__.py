"""spamfilter: a GPT-2 spam classifier for mail, trained in torch and run with onnxruntime.

>>> from spamfilter import Classifier, extract_text              # doctest: +SKIP
>>> clf = Classifier.load("model-dir")                            # onnxruntime only, no torch
>>> clf.classify(["WINNER! Claim your prize", "lunch at 1?"])     # [(label, P(spam)), ...]
>>> clf.classify([extract_text(open("message.eml", "rb").read())])

Names are imported on first use, so ``import spamfilter`` stays light and the filter path never
imports torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Classifier": "spamfilter.runtime",
    "extract_text": "spamfilter.mail",
    "Decision": "spamfilter.verdict",
    "insert_spam_headers": "spamfilter.verdict",
    "load_pretrained": "spamfilter.weights",
    "Tokenizer": "spamfilter.tokenizer",
}
__all__ = [
    "Classifier",
    "Decision",
    "Tokenizer",
    "__version__",
    "extract_text",
    "insert_spam_headers",
    "load_pretrained",
]

if TYPE_CHECKING:
    from .mail import extract_text
    from .runtime import Classifier
    from .tokenizer import Tokenizer
    from .verdict import Decision, insert_spam_headers
    from .weights import load_pretrained


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'spamfilter' has no attribute {name!r}")
