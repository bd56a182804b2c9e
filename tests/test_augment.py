"""Training copies (spamfilter/augment.py): link-only copies of the training mail, training spam
read between sentences of training ham, and training spam under training ham's Subjects."""

from __future__ import annotations

import pandas as pd

from spamfilter.augment import interleaved_copies, link_only_copies, subject_copies
from spamfilter.mail.text import TEXT_CHARS_READ


def test_link_only_copies_keep_the_subject_and_one_or_two_of_the_messages_links() -> None:
    train = pd.DataFrame(
        {
            "Text": [
                "WIN a prize\nClaim it now at http://win.example/claim, or http://win.example/b.\nbye",
                "Re: the build\nThe log is at https://ci.example.org/42 (see line 9)",
                "lunch?\nnoon at the usual place",
            ],
            "Label": [1, 0, 0],
        }
    )
    out = link_only_copies(train, seed=1)
    assert out.iloc[:3].equals(train)  # the real messages first, unchanged
    copies = out.iloc[3:]
    assert copies["Label"].tolist() == [1, 0]  # each labelled as its message; no link, no copy
    spam, ham = copies["Text"].tolist()
    subject, _, links = spam.partition("\n")
    assert subject == "WIN a prize"
    assert set(links.split("\n\n")) <= {"http://win.example/claim", "http://win.example/b"}
    assert ham == "Re: the build\nhttps://ci.example.org/42"  # the link without its punctuation


def test_link_only_copies_are_the_same_for_the_same_seed() -> None:
    texts = [f"offer {i}\n" + " ".join(f"http://x{i}.example/{j}" for j in range(5)) for i in range(20)]
    train = pd.DataFrame({"Text": texts, "Label": [1] * 20})
    assert link_only_copies(train, seed=3).equals(link_only_copies(train, seed=3))
    assert not link_only_copies(train, seed=3).equals(link_only_copies(train, seed=4))


def _interleave_split() -> pd.DataFrame:
    ham = [
        "Re: the build\nThe log is at the usual place. It failed on the second step again! Ok.",
        "lunch?\nAre we still meeting at noon tomorrow? Let me know before ten.",
    ]
    spam = [f"offer {i}\nBuy now\nCheap pills here\n\nhttp://pills.example/{i}\nLast line" for i in range(12)]
    return pd.DataFrame({"Text": ham + spam, "Label": [0, 0] + [1] * 12})


def test_interleaved_copies_put_ham_sentences_between_every_spams_lines() -> None:
    train = _interleave_split()
    copies = interleaved_copies(train, seed=1)
    assert len(copies) == 12 and copies["Label"].eq(1).all()  # one copy per spam, none of the ham
    # the ham's sentences of 4 to 20 words ("Ok." is too short), never its Subject line
    sentences = {
        "The log is at the usual place.",
        "It failed on the second step again!",
        "Are we still meeting at noon tomorrow?",
        "Let me know before ten.",
    }
    gaps = set()
    for original, copy in zip(train["Text"].iloc[2:], copies["Text"], strict=True):
        lines = copy.split("\n")
        assert lines[0] == original.split("\n")[0]  # the Subject stays first, alone
        spam_lines = [line for line in lines[1:] if line not in sentences]
        assert spam_lines == original.split("\n")[1:]  # every line of the spam kept, in order, blanks too
        inserted = [line for line in lines[1:] if line in sentences]
        assert 2 <= len(inserted) <= 4  # after the 1st (and 2nd, 3rd, 4th) of its 4 non-empty lines
        assert lines[2] in sentences  # a sentence after the first line
        gaps.add(len(inserted))
    assert len(gaps) > 1  # copies differ in how often a sentence comes: every 1 to 3 lines


def test_interleaved_copies_are_the_same_for_the_same_seed_and_need_ham_sentences() -> None:
    train = _interleave_split()
    assert interleaved_copies(train, seed=3).equals(interleaved_copies(train, seed=3))
    assert not interleaved_copies(train, seed=3).equals(interleaved_copies(train, seed=4))
    no_prose = train.assign(Text=["hi\nok", "yo\nfine"] + train["Text"].tolist()[2:])
    assert interleaved_copies(no_prose, seed=3).empty  # nothing to borrow: no copies


def test_an_interleaved_copy_is_no_longer_than_the_reader_reads() -> None:
    """A training spam (from a Junk folder a spammer fills) of 10,000 one-letter lines would take a
    sentence after each: the copy stops at the reader's cap on a message's text."""
    train = _interleave_split()
    lines = "\n".join("x" for _ in range(10_000))
    train = pd.concat(
        [train, pd.DataFrame({"Text": [f"many lines\n{lines}"], "Label": [1]})], ignore_index=True
    )
    copies = interleaved_copies(train, seed=1)["Text"].tolist()
    assert max(len(copy) for copy in copies) <= TEXT_CHARS_READ
    assert len(copies[-1]) > TEXT_CHARS_READ - 100  # cut at the cap, not far short of it
    assert copies[-1].startswith("many lines\nx\n")


def test_subject_copies_put_each_spams_body_under_a_hams_subject() -> None:
    train = pd.DataFrame({"Label": [1, 0, 1], "Text": ["WIN NOW\nclaim the prize", "lunch\nsee you", "X\ny"]})
    copies = subject_copies(train, seed=1)
    assert copies["Text"].tolist() == ["lunch\nclaim the prize", "lunch\ny"]
    assert copies["Label"].tolist() == [1, 1]
    assert subject_copies(train[train["Label"] == 1], seed=1).empty  # no ham Subject to take
