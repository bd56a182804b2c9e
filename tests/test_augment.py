"""Training copies (spamfilter/augment.py): link-only copies of the training mail."""

from __future__ import annotations

import pandas as pd

from spamfilter.augment import link_only_copies


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
