"""Per-user heads (spamfilter/user_heads.py): names are never paths, the store is bounded, a user's
corrections change that user's verdicts and no one else's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from spamfilter.errors import UsageError
from spamfilter.head import Head, apply_head
from spamfilter.learn import current_head, read_features, window_features
from spamfilter.mail import iter_mail_source
from spamfilter.modeldir import open_model_directory
from spamfilter.pipeline import message_text
from spamfilter.user_heads import (
    MAX_USER_LENGTH,
    USERS_DIR,
    UserHead,
    UserHeads,
    UserLimitReached,
    score_with_head,
    train_user_head,
    trunk_fingerprint,
    user_key,
    valid_user,
)

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "spamassassin"


@pytest.mark.parametrize(
    "name",
    ["", "../etc", "a/b", "/root", "a\0b", "..", ".hidden", "a..b", "x" * (MAX_USER_LENGTH + 1), "a b", "é"],
)
def test_a_user_name_that_could_be_a_path_is_refused(name: str) -> None:
    with pytest.raises(UsageError):
        valid_user(name)


def test_a_valid_name_becomes_a_digest_not_a_path(tmp_path: Path) -> None:
    for name in ("alice", "alice@example.org", "bob+junk@example.org", "x" * MAX_USER_LENGTH):
        assert valid_user(name) == name
        key = user_key(name)
        assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)
    heads = UserHeads(tmp_path)
    assert heads.folder("alice").parent == tmp_path / USERS_DIR


def test_the_number_of_users_is_bounded(tmp_path: Path) -> None:
    heads = UserHeads(tmp_path, max_users=2)
    head = UserHead(Head(np.ones((2, 4)), np.zeros(2)), 0.5, "t")
    heads.save("a", head)
    heads.save("b", head)
    heads.save("a", head)  # an existing user is not a new one
    with pytest.raises(UserLimitReached):
        heads.save("c", head)
    assert sorted(heads.users()) == ["a", "b"]


def test_the_bytes_of_a_users_corrections_are_bounded(tmp_path: Path) -> None:
    """1,000 corrections of up to 512 KB each: 512 MB one local user could store under their own
    account. The bytes kept per user are bounded too (MAX_CORRECTION_BYTES by default)."""
    from spamfilter.corrections import QuotaExceeded
    from spamfilter.user_heads import MAX_CORRECTION_BYTES

    assert MAX_CORRECTION_BYTES <= 20_000_000
    heads = UserHeads(tmp_path, max_correction_bytes=300_000)
    big = [b"Subject: %d\n\n" % i + b"x" * 100_000 for i in range(4)]
    for raw in big[:2]:
        assert heads.add("alice", raw, 0)
    with pytest.raises(QuotaExceeded, match="alice keeps 2 corrections"):
        heads.add("alice", big[2], 1)
    assert heads.add("bob", big[3], 1)  # another user's bytes are their own
    assert heads.add("alice", big[0], 1)  # moving a kept one to the other class costs nothing


def test_heads_held_in_memory_are_bounded_and_a_damaged_file_is_no_head(tmp_path: Path) -> None:
    heads = UserHeads(tmp_path, max_loaded=3, trunk="t")
    for i in range(5):
        heads.save(f"u{i}", UserHead(Head(np.full((2, 4), i), np.zeros(2)), 0.5, "t"))
        assert heads.head(f"u{i}") is not None
    assert heads.loaded == 3
    heads.invalidate("u4")
    assert heads.loaded == 2
    (heads.folder("u0") / "head.npz").write_bytes(b"not a head")
    assert heads.head("u0") is None
    heads.save("old", UserHead(Head(np.ones((2, 4)), np.zeros(2)), 0.5, "another trunk"))
    assert heads.head("old") is None  # trained for another trunk: the shared verdict


@pytest.fixture()
def model_copy(trained_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_model, tmp_path / "model"))


def test_a_users_corrections_change_that_users_verdicts_only(model_copy: Path) -> None:
    directory = open_model_directory(model_copy)
    shared = current_head(directory)
    raws = list(iter_mail_source(CORPUS / "easy_ham.mbox"))[:60]
    texts = [message_text(raw) for raw in raws]
    features, owners, discounts = window_features(directory, texts)
    before = score_with_head(shared, features, owners, len(raws), discounts)
    flagged = [i for i, score in enumerate(before) if score >= directory.threshold]
    assert len(flagged) >= 10, "the SMS model should mark some of this email as spam"
    heads = UserHeads(model_copy, trunk=trunk_fingerprint(read_features(model_copy)["train_features"]))
    for i in flagged[:10]:
        assert heads.add("alice@example.org", raws[i], 0)
    trained = train_user_head(model_copy, "alice@example.org", heads)
    assert trained is not None
    alice = heads.head("alice@example.org")
    assert alice is not None
    after = score_with_head(alice.head, features, owners, len(raws), discounts)
    assert all(after[i] < alice.threshold for i in flagged[:10])  # her 10 corrections took effect
    assert heads.head("bob@example.org") is None  # bob has none: the shared head, unchanged
    assert np.array_equal(current_head(open_model_directory(model_copy)).weight, shared.weight)
    # Forgetting every correction removes her head.
    for i in flagged[:10]:
        heads.remove("alice@example.org", raws[i])
    assert train_user_head(model_copy, "alice@example.org", heads) is None
    assert heads.head("alice@example.org") is None


def test_score_with_head_takes_a_messages_highest_window() -> None:
    head = Head(np.array([[0.0, 0.0], [1.0, 0.0]]), np.zeros(2))
    features = np.array([[-2.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    scores = score_with_head(head, features, np.array([0, 0, 1]), 2)
    assert np.allclose(scores, [apply_head(head, features[1:2])[0], 0.5])


def test_the_shared_head_given_as_a_users_head_scores_as_the_model_does(trained_model: Path) -> None:
    """A user's head is applied at every position the model reads (line-ends pooling: its
    ``read_features``) and a window scored by its highest: with the shared head itself, that is
    the graph's own choice, so the scores must equal the model's."""
    from spamfilter.runtime import Classifier, create_session

    directory = open_model_directory(trained_model)
    assert directory.manifest.pooling == "line-ends"  # the default: the case with positions to choose
    raws = (
        list(iter_mail_source(CORPUS / "spam.mbox"))[:12]
        + list(iter_mail_source(CORPUS / "hard_ham.mbox"))[:12]
    )
    texts = [message_text(raw) for raw in raws]
    classifier = Classifier.load(trained_model, variant="fp32")
    own = classifier.spam_probability(texts)
    as_user = classifier.spam_probability(texts, heads=[current_head(directory)] * len(texts))
    np.testing.assert_allclose(as_user, own, atol=1e-5)
    # fp32 for both: int8 quantizes activations over the whole batch, so its answers move with
    # the batch's padding, which the filter trims and these rows do not
    session = create_session(directory.checked_variant_file("fp32"))
    features, owners, discounts = window_features(directory, texts, session)
    assert len(features) > len(texts)  # several rows a message: every position read
    np.testing.assert_allclose(
        score_with_head(current_head(directory), features, owners, len(texts), discounts), own, atol=1e-5
    )


def test_a_head_file_that_is_no_head_gives_the_shared_verdict(tmp_path: Path) -> None:
    """A model directory from elsewhere: a FIFO as a user's head.npz held ``filter --user`` for
    ever (deaf to SIGTERM), an array header claiming shape (2, 4e9) asked for 30 GB, a NaN threshold
    or weight ended the batch in an error. Each is now no head: the user gets the shared verdict."""
    import io
    import os

    from spamfilter import user_heads

    heads = UserHeads(tmp_path)
    good = UserHead(Head(np.ones((2, 4)), np.zeros(2)), 0.5, "t")
    heads.save("alice", good)
    path = heads.folder("alice") / user_heads.HEAD_FILE
    assert user_heads._read_head(path) is not None
    path.unlink()
    os.mkfifo(path)
    assert user_heads._read_head(path) is None  # at once: not opened for a writer to come
    path.unlink()
    header = b"\x93NUMPY\x01\x00" + b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4000000000), }"
    header += b" " * (-(len(header) + 1) % 64) + b"\n"
    buffer = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("weight.npy", header + b"\0" * 64)
        archive.writestr("bias.npy", header + b"\0" * 64)
    path.write_bytes(buffer.getvalue())
    assert user_heads._read_head(path) is None
    for threshold, weight in ((float("nan"), 1.0), (0.5, float("nan"))):
        heads.save("alice", UserHead(Head(np.full((2, 4), weight), np.zeros(2)), threshold, "t"))
        assert user_heads._read_head(path) is None


def test_a_fifo_or_link_among_the_corrections_is_not_read(tmp_path: Path) -> None:
    """A FIFO planted among a model directory's corrections held every retrain; a link to
    /dev/zero read until memory ran out."""
    import os

    from spamfilter.corrections import Corrections

    corrections = Corrections(tmp_path)
    assert corrections.add(b"Subject: kept\n\nhello\n", 1)
    spam = tmp_path / "corrections" / "spam"
    os.mkfifo(spam / "fifo.eml")
    (spam / "zero.eml").symlink_to("/dev/zero")
    assert [label for _, label, _ in corrections] == [1]


def test_a_head_of_another_width_gives_the_shared_verdict(trained_model: Path) -> None:
    """A user's head of the wrong width (a (2, 7) head on a 128-wide model) failed the whole
    batch: every message of it passed untagged. It is now no head for that text alone."""
    from spamfilter.runtime import Classifier

    classifier = Classifier.load(trained_model)
    texts = ["WIN a prize now, call 0906", "lunch tomorrow at noon?"]
    shared = classifier.spam_probability(texts)
    wrong = Head(np.ones((2, 7)), np.zeros(2))
    np.testing.assert_allclose(classifier.spam_probability(texts, heads=[wrong, None]), shared, atol=1e-6)
