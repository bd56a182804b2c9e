"""Training against the tricks that survive reading: ham text placed around training spam
(``--augment``), ham sentences between a training spam's lines (``--interleave``), mail cut
down to its links (``--link-copies``) and spam under ham Subjects (``--subject-copies``; all off by
default).

:func:`spamfilter.mail.extract_text` undoes what changes the code points but not what a reader
sees (hidden HTML, zero-width characters, look-alike letters, transfer encodings) and quoted reply
lines; windows (:mod:`spamfilter.windows`) read past pages of padding. What is left to the model is
ordinary text placed around the offer: a paragraph of ordinary mail before it, or common words
after it, in the same window. ``augment_spam`` adds, for each training spam, one copy with ham
text of the training split before its body and one with ham text after it, so that the model
learns that an offer is an offer wherever it stands (:func:`spamfilter.finetune.fine_tune` also
trains every further window of a long training ham as ham).
``link_only_copies`` adds, for every training message that shows a link, a copy cut down to its
Subject and one or two of its links: a spam that sends nothing else gives the model only those to
read, and the ham copies keep a bare shared link from reading as spam.
``subject_copies`` adds, for each training spam, a copy under the Subject of a random training ham:
the Subject is the line every window repeats, and a spam that writes a harmless one (or two Subject
fields) is otherwise judged by it.
``interleaved_copies`` adds, for each training spam, one copy with a sentence of training ham after
every first to third line of its body: an offer read between lines of ordinary mail.
Validation and test splits are never changed:
the threshold and the reported figures stay those of real mail.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd

from .mail.text import TEXT_CHARS_READ

_URL = re.compile(r"https?://[^\s<>\"']+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
SENTENCE_WORDS = (4, 20)  # a ham sentence between spam lines: long enough to read as prose
INTERLEAVE_EVERY = (1, 3)  # a sentence after every first, second or third line of a copy
PREFIX_WORDS = (30, 150)  # words of ham text put before a spam's body (a paragraph or two)
SUFFIX_WORDS = (50, 200)  # words put after it


def _ham_words(texts: list[str]) -> list[list[str]]:
    """The words of each ham body (its first line, the Subject, left out), for ham that has some."""
    bodies = [text.partition("\n")[2].split() for text in texts]
    return [words for words in bodies if len(words) >= 8]


def _stretch(pool: list[list[str]], rng: random.Random, bounds: tuple[int, int]) -> str:
    """A run of consecutive words from one ham body, as long as ``bounds`` allows."""
    words = rng.choice(pool)
    count = min(len(words), rng.randint(*bounds))
    start = rng.randint(0, len(words) - count)
    return " ".join(words[start : start + count])


def augment_spam(train: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``train`` (columns Text, Label) with two changed copies of every spam appended; unchanged
    where there is no ham with enough words to borrow from."""
    pool = _ham_words(train.loc[train["Label"] == 0, "Text"].tolist())
    spam = train.loc[train["Label"] == 1, "Text"].tolist()
    if not pool or not spam:
        return train
    rng = random.Random(seed)
    copies = []
    for text in spam:
        subject, _, body = text.partition("\n")
        copies.append(f"{subject}\n{_stretch(pool, rng, PREFIX_WORDS)}\n\n{body}")
        copies.append(f"{text}\n\n{_stretch(pool, rng, SUFFIX_WORDS)}")
    added = pd.DataFrame({"Label": np.ones(len(copies), dtype=np.int64), "Text": copies})
    return pd.concat([train, added], ignore_index=True)


def _ham_sentences(texts: list[str]) -> list[str]:
    """The sentences of the ham bodies (the Subject line left out) that read as prose."""
    low, high = SENTENCE_WORDS
    return [
        " ".join(words)
        for text in texts
        for sentence in _SENTENCE_END.split(text.partition("\n")[2])
        if low <= len(words := sentence.split()) <= high
    ]


def interleaved_copies(train: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One copy of every spam of ``train`` (columns Text, Label), a sentence of its ham after every
    first, second or third non-empty line of the body; none where the ham has no sentences."""
    pool = _ham_sentences(train.loc[train["Label"] == 0, "Text"].tolist())
    spam = train.loc[train["Label"] == 1, "Text"].tolist()
    if not pool:
        spam = []
    rng = random.Random(f"{seed}:interleave")
    copies = []
    for text in spam:
        subject, _, body = text.partition("\n")
        every = rng.randint(*INTERLEAVE_EVERY)
        lines: list[str] = []
        written = 0  # non-empty lines of the body so far
        size = len(subject)
        # A spam of thousands of one-letter lines would take a sentence each: the copy stops at the
        # reader's own cap on a message's text, as extract_text would cut it.
        for line in body.split("\n"):
            added = [line]
            if line.strip():
                if written % every == 0:
                    added.append(rng.choice(pool))
                written += 1
            lines += added
            size += sum(len(piece) + 1 for piece in added)  # each after a newline
            if size >= TEXT_CHARS_READ:
                break
        copies.append((subject + "\n" + "\n".join(lines))[:TEXT_CHARS_READ])
    return pd.DataFrame({"Label": np.ones(len(copies), dtype=np.int64), "Text": copies})


def link_only_copies(train: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``train`` with, for every message (spam or ham) whose text shows a link, a copy cut down to
    its first line (the Subject) and one or two of its links, labelled as the message was: a spam
    that sends nothing but a link is read on the link and the Subject, and a ham that does the same
    (a shared link, a list's notice) stays ham."""
    rng = random.Random(f"{seed}:links")
    copies, labels = [], []
    for text, label in zip(train["Text"].tolist(), train["Label"].tolist(), strict=True):
        subject, _, body = text.partition("\n")
        links = list(dict.fromkeys(url.rstrip(".,;)") for url in _URL.findall(body)))
        if not links:
            continue
        chosen = rng.sample(links, min(len(links), rng.randint(1, 2)))
        copies.append(subject + "\n" + "\n\n".join(chosen))
        labels.append(label)
    added = pd.DataFrame({"Label": np.asarray(labels, dtype=np.int64), "Text": copies})
    return pd.concat([train, added], ignore_index=True)


def subject_copies(train: pd.DataFrame, seed: int) -> pd.DataFrame:
    """For every spam of ``train``, a copy whose first line (the Subject) is that of a random
    training ham, labelled spam: an offer under a harmless Subject is still an offer. Ham is not
    copied (a spam's Subject on a ham's body would teach that such a Subject is harmless)."""
    rng = random.Random(f"{seed}:subjects")
    texts, labels = train["Text"].tolist(), train["Label"].tolist()
    subjects = [text.partition("\n")[0] for text, label in zip(texts, labels, strict=True) if label == 0]
    subjects = [subject for subject in subjects if subject.strip()]
    copies = [
        rng.choice(subjects) + "\n" + text.partition("\n")[2]
        for text, label in zip(texts, labels, strict=True)
        if label == 1 and subjects
    ]
    return pd.DataFrame({"Label": np.ones(len(copies), dtype=np.int64), "Text": copies})
