"""Training copies (spamfilter/augment.py): link-only copies of the training mail."""

from __future__ import annotations

import pandas as pd

from spamfilter.augment import SENTENCE_WORDS, interleaved_copies, link_only_copies


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


def _mail() -> pd.DataFrame:
    ham = [
        "Re: the build\nThe log is at the usual place. It failed on line nine again today.\nCheers, Rob",
        "lunch?\nShall we meet at noon near the station? The new place opened last week!",
        "minutes\nWe agreed to ship on Friday. Paul will write the notes for everyone.",
    ]
    spam = ["WIN a prize\nYou have been selected\n\nClaim your prize now\nhttp://win.example/claim"]
    return pd.DataFrame({"Text": spam + ham, "Label": [1, 0, 0, 0]})


def test_interleaved_copies_put_a_ham_sentence_after_every_line_of_a_spam_and_of_as_many_ham() -> None:
    train = _mail()
    out = interleaved_copies(train, seed=1)
    assert out.iloc[:4].equals(train)  # the real messages first, unchanged
    copies = out.iloc[4:]
    assert copies["Label"].tolist() == [1, 0]  # every spam, then as many ham, each labelled as its message
    ham_words = set(" ".join(train["Text"][1:]).split())
    subject, _, body = copies["Text"].iloc[0].partition("\n")
    assert subject == "WIN a prize"
    lines = body.split("\n")
    own = ["You have been selected", "", "Claim your prize now", "http://win.example/claim"]
    # each line of the spam, in order, followed by one sentence of the ham; the blank line kept
    assert [line for line in lines if line in own] == own
    added = [line for line in lines if line not in own]
    assert len(added) == 3
    for sentence in added:
        assert (
            SENTENCE_WORDS[0] <= len(sentence.split()) <= SENTENCE_WORDS[1]
            and set(sentence.split()) <= ham_words
        )
    ham_copy = copies["Text"].iloc[1]
    assert ham_copy.partition("\n")[0] in {"Re: the build", "lunch?", "minutes"}


def test_interleaved_copies_are_seeded_and_need_ham_sentences() -> None:
    train = _mail()
    assert interleaved_copies(train, seed=3).equals(interleaved_copies(train, seed=3))
    assert not interleaved_copies(train, seed=3).equals(interleaved_copies(train, seed=4))
    no_sentences = pd.DataFrame({"Text": ["offer\nbuy now", "hi\nok"], "Label": [1, 0]})
    assert interleaved_copies(no_sentences, seed=1).equals(no_sentences)
