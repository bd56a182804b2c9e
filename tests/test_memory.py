"""The memory of corrected mail (spamfilter/memory.py): near-duplicates of a reported spam or ham,
on real messages of the SpamAssassin corpus; kept in step with the corrections; bounded and safe to
read; the same hashes in every process; applied by the classifier for the shared model and per user,
and named in the explanation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import SHARED_DATA

from spamfilter.corrections import Corrections
from spamfilter.explain import explain_batch, report_header
from spamfilter.labelled import message_key
from spamfilter.mail import iter_mail_source
from spamfilter.memory import (
    MEMORY_FILE,
    MIN_SPAM_SHINGLES,
    SKETCH_SIZE,
    WEIGHT,
    Memory,
    read_memory,
    shingles,
    write_memory,
)
from spamfilter.pipeline import message_text
from spamfilter.replay import HeadFilter
from spamfilter.runtime import Classifier
from spamfilter.user_heads import UserHeads

CORPUS = SHARED_DATA / "spamassassin"


@pytest.fixture(scope="module")
def mail() -> dict[str, list[bytes]]:
    return {
        "spam": list(iter_mail_source(CORPUS / "spam.mbox"))[:40],
        "ham": list(iter_mail_source(CORPUS / "easy_ham.mbox"))[:40],
    }


def long_texts(raws: list[bytes], count: int) -> list[str]:
    """Texts of at least 60 words (enough shingles to be evidence), in corpus order."""
    texts = [message_text(raw) for raw in raws]
    return [text for text in texts if len(text.split()) >= 60][:count]


def logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def test_shingles_are_the_same_in_another_process(mail: dict[str, list[bytes]]) -> None:
    text = message_text(mail["spam"][0])
    code = (
        "import sys; from spamfilter.memory import shingles; "
        "sys.stdout.write(','.join(str(h) for h in shingles(sys.stdin.read())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # Python's own str hash differs per process
    other = subprocess.run(
        [sys.executable, "-c", code], input=text, capture_output=True, text=True, env=env, check=True
    )
    assert [int(h) for h in other.stdout.split(",")] == shingles(text).tolist()
    assert len(shingles(text)) > SKETCH_SIZE


def test_a_spam_padded_or_interleaved_with_ham_still_holds_the_reported_spam(
    mail: dict[str, list[bytes]],
) -> None:
    spam, other_spam = long_texts(mail["spam"], 2)
    ham = long_texts(mail["ham"], 3)
    memory = Memory().with_entry("reported", 1, spam, 0.0)
    preamble = "\n".join(ham) + "\n" + spam
    lines = spam.splitlines()
    interleaved = "\n".join(f"{line}\n{ham[0][:80]}" for line in lines)
    assert memory.evidence(shingles(spam)).shift == pytest.approx(WEIGHT)
    found = memory.evidence(shingles(preamble)).spam
    assert found is not None and found.share == 1.0 and found.key == "reported"
    # Interleaving breaks only the runs across a line break: most of the offer is still there.
    found = memory.evidence(shingles(interleaved)).spam
    assert found is not None and found.share >= 0.6, found
    # Other mail shares next to nothing with it.
    for text in [*ham, other_spam]:
        unrelated = memory.evidence(shingles(text))
        assert unrelated.spam is None or unrelated.spam.share < 0.1
        assert unrelated.shift < 1.0


def test_a_reported_ham_only_takes_back_a_spams_evidence_and_never_lowers_a_verdict(
    mail: dict[str, list[bytes]],
) -> None:
    ham = long_texts(mail["ham"], 1)[0]
    spams = long_texts(mail["spam"], 4)
    memory = Memory().with_entry("newsletter", 0, ham, 0.0)
    copy = memory.evidence(shingles(ham + "\n-- \nsent again"))
    carried = memory.evidence(shingles("\n".join(spams) + "\n" + ham))
    assert copy.ham is not None and copy.ham.share > 0.9  # its next copy: alike ...
    assert carried.ham is not None and carried.ham.share < 0.5  # a spam carrying it whole: less so
    # ... but neither moves: a spam padded with known ham must not be lowered by it.
    assert copy.shift == 0.0 and carried.shift == 0.0 and copy.lines() == []
    both = memory.with_entry("spam", 1, spams[0], 0.0)
    mixed = both.evidence(shingles(spams[0] + "\n" + ham))  # the spam, and the ham alike
    assert mixed.spam is not None and mixed.ham is not None and mixed.spam.share == 1.0
    assert mixed.shift == pytest.approx(WEIGHT * (1.0 - mixed.ham.share))
    assert [line.split()[0] for line in mixed.lines()] == ["+10.00", f"{-WEIGHT * mixed.ham.share:+.2f}"]


LIST_FOOTER = (
    "_______________________________________________\nIrish Linux Users' Group Social Events: "
    "social@linux.ie\nhttp://www.linux.ie/mailman/listinfo/social for (un)subscription information.\n"
    "List maintainer: listmaster@linux.ie"
)


def test_runs_that_a_reported_ham_holds_too_are_not_a_spams_evidence(mail: dict[str, list[bytes]]) -> None:
    """A spam sent to a mailing list carries the list's footer, as every ham of the list does: in
    the replay such footers pushed list ham over the threshold (RESULTS.md section 38)."""
    offer = "Claim your free gift card today and get fast approvals for any credit, visit the link below"
    spam = f"{offer}\n{LIST_FOOTER}"
    notes = [" ".join(text.split()[:30]) for text in long_texts(mail["ham"], 4)]  # short: sketched whole
    alone = Memory().with_entry("spam", 1, spam, 0.0)
    memory = alone
    for number, note in enumerate(notes[:3]):
        memory = memory.with_entry(f"list-ham-{number}", 0, f"{note}\n{LIST_FOOTER}", 0.0)
    later = shingles(f"{notes[3]}\n{LIST_FOOTER}")  # the next ham of the list
    found = alone.evidence(later).spam
    assert found is not None and found.share > 0.3  # the footer alone, without the list's ham
    assert memory.evidence(later).spam is None  # its runs are the ham's too: no evidence
    again = memory.evidence(shingles(f"{notes[3]}\n{spam}")).spam  # the spam itself, sent again
    assert again is not None and again.share == 1.0


def test_a_short_reported_spam_is_no_evidence(mail: dict[str, list[bytes]]) -> None:
    short = "click here to win"  # contained in a great deal of mail
    assert len(shingles(short)) < MIN_SPAM_SHINGLES
    memory = Memory().with_entry("short", 1, short, 0.0)
    assert memory.evidence(shingles("Please click here to win a free prize today, friend")).spam is None


def test_the_memory_file_round_trips_and_anything_else_reads_as_empty(tmp_path: Path) -> None:
    memory = Memory().with_entry("a", 1, "one two three four five six seven eight nine ten " * 5, 1.0)
    memory = memory.with_entry("b", 0, "alpha beta gamma delta epsilon zeta eta theta", 2.0)
    write_memory(tmp_path, memory)
    again = read_memory(tmp_path)
    assert again.keys == ("a", "b") and np.array_equal(again.hashes, np.sort(memory.hashes))
    assert (tmp_path / MEMORY_FILE).stat().st_mode & 0o777 == 0o600
    for text in ("one two three four five six seven eight nine ten", "alpha beta gamma delta epsilon zeta"):
        assert again.evidence(shingles(text)) == memory.evidence(shingles(text))  # the index as stored
    raw = (tmp_path / MEMORY_FILE).read_bytes()
    (tmp_path / MEMORY_FILE).write_bytes(raw[: len(raw) // 2])  # truncated
    assert len(read_memory(tmp_path)) == 0
    (tmp_path / MEMORY_FILE).unlink()
    os.mkfifo(tmp_path / MEMORY_FILE)  # a FIFO planted there must not hold the filter
    assert len(read_memory(tmp_path)) == 0
    bad = Memory(memory.hashes, memory.owners, memory.sizes[:1], memory.labels, memory.when, memory.keys)
    with pytest.raises(ValueError, match="do not agree"):
        Memory.from_bytes(bad.to_bytes())
    with pytest.raises(ValueError, match="not a memory file"):
        Memory.from_bytes(b"PK\x03\x04 not a zip")


def test_the_memory_follows_the_corrections_kept(tmp_path: Path, mail: dict[str, list[bytes]]) -> None:
    corrections = Corrections(tmp_path)
    spam, ham = mail["spam"][3], mail["ham"][3]
    assert corrections.add(spam, 1) and corrections.add(ham, 0)
    memory = read_memory(corrections.root)
    assert sorted(memory.keys) == sorted([message_key(spam).hex(), message_key(ham).hex()])
    assert corrections.add(spam, 0)  # filed again as ham: remembered once, as ham
    memory = read_memory(corrections.root)
    assert len(memory) == 2 and set(memory.labels.tolist()) == {0}
    assert corrections.remove(ham)
    assert read_memory(corrections.root).keys == (message_key(spam).hex(),)
    # A correction removed by hand is gone from the memory after the rebuild learn does.
    for _, _, path in corrections:
        path.unlink()
    assert corrections.remember_all() == 0 and len(read_memory(corrections.root)) == 0


@pytest.fixture()
def model_copy(trained_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_model, tmp_path / "model"))


def test_a_correction_moves_its_near_duplicates_at_once_for_everyone_or_for_its_user(
    model_copy: Path, mail: dict[str, list[bytes]]
) -> None:
    spam_raw = next(raw for raw in mail["spam"] if len(message_text(raw).split()) >= 60)
    ham_texts = long_texts(mail["ham"], 4)
    padded = "\n".join(ham_texts[:2]) + "\n" + message_text(spam_raw)  # the spam behind a ham preamble
    texts = [padded, *ham_texts[2:]]
    before = Classifier.load(model_copy).spam_probability(texts)

    UserHeads(model_copy).add("alice@example.org", spam_raw, 1)  # alice's own correction
    alice = Classifier.load(model_copy).for_user("alice@example.org")
    bob = Classifier.load(model_copy).for_user("bob@example.org")
    shared = Classifier.load(model_copy)
    for_alice = alice.spam_probability(texts)
    assert logit(float(for_alice[0])) - logit(float(before[0])) == pytest.approx(WEIGHT, abs=0.01)
    assert np.array_equal(for_alice[1:], before[1:])  # her other mail as it was
    assert np.array_equal(bob.spam_probability(texts), before)  # bob's and everyone else's too
    assert np.array_equal(shared.spam_probability(texts), before)
    shared.use_memory = False
    assert np.array_equal(shared.spam_probability(texts), before)

    Corrections(model_copy).add(spam_raw, 1)  # the same spam filed for everyone (learn, TELL)
    assert np.array_equal(shared.spam_probability(texts), before)  # use_memory is off for this one
    shared.use_memory = True  # the same classifier: the changed file is read again
    moved = shared.spam_probability(texts)
    assert logit(float(moved[0])) - logit(float(before[0])) == pytest.approx(WEIGHT, abs=0.01)
    explanation = explain_batch(shared, [padded])[0]
    assert explanation.memory and explanation.memory[0].startswith(f"+{WEIGHT:.2f} holds 100% of a spam")
    assert f"memory {explanation.memory[0]}" in report_header(explanation)


def test_the_replay_remembers_a_label_only_after_it_is_fed_back(mail: dict[str, list[bytes]]) -> None:
    text = long_texts(mail["spam"], 1)[0]
    texts = [text, text + "\nagain", "a ham of its own about the weekly meeting and its agenda, nothing else"]
    features = np.zeros((3, 4), dtype=np.float32)
    online = HeadFilter(
        np.zeros((2, 4)),
        np.zeros(2),
        0.5,
        features,
        np.arange(3),
        features,
        np.array([0, 1, 0]),
        trainer=lambda weight, bias, taught, trained: (weight, bias),  # the head stays: memory alone
        texts=texts,
    )
    first = online.score([0, 1, 2])
    assert np.allclose(first, 0.5)  # nothing remembered yet: the head's 0.5 for all
    online.learn([0], [1])
    after = online.score([1, 2])
    assert after[0] > 0.99 and after[1] == pytest.approx(first[2])


def test_a_memory_made_at_once_is_the_memory_made_one_by_one(mail: dict[str, list[bytes]]) -> None:
    entries = [(f"spam-{n}", 1, text, float(n)) for n, text in enumerate(long_texts(mail["spam"], 5))]
    entries += [(f"ham-{n}", 0, text, float(n)) for n, text in enumerate(long_texts(mail["ham"], 5))]
    entries.append(("spam-0", 0, entries[0][2], 9.0))  # filed again, as ham: the later one counts
    one_by_one = Memory()
    for entry in entries:
        one_by_one = one_by_one.with_entry(*entry)
    at_once = Memory.of(entries)
    assert sorted(at_once.keys) == sorted(one_by_one.keys) and len(at_once) == 10
    for text in [*long_texts(mail["spam"], 8)[5:], entries[0][2]]:
        assert at_once.evidence(shingles(text)) == one_by_one.evidence(shingles(text))


def test_user_memories_held_at_once_are_bounded_and_follow_their_files(tmp_path: Path) -> None:
    from spamfilter.memory import MemoryFiles

    files = MemoryFiles(max_loaded=2)
    folders = [tmp_path / name for name in ("a", "b", "c")]
    for number, folder in enumerate(folders):
        folder.mkdir()
        write_memory(folder, Memory().with_entry(f"k{number}", 1, "one two three four five six " * 4, 0.0))
        assert files.current(folder).keys == (f"k{number}",)
    assert len(files._files) == 2 and folders[0] not in files._files  # the least recently used went
    write_memory(folders[2], Memory())  # changed on disk (a TELL in another process): read again
    assert len(files.current(folders[2])) == 0


def test_the_word_hashes_kept_between_messages_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import spamfilter.memory as memory_module

    monkeypatch.setattr(memory_module, "MAX_KNOWN_WORDS", 50)
    text = " ".join(f"word{n}" for n in range(40))
    before = shingles(text)
    for batch in range(10):  # made-up words, message after message
        shingles(" ".join(f"junk{batch}x{n}" for n in range(40)))
        assert len(memory_module._KNOWN_WORDS) <= 50 + 40
    assert np.array_equal(shingles(text), before)  # the same hashes, kept or computed again
