"""SMS data: download (over file:// URLs, the same urllib code path as https), checks, balancing, split."""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from spamfilter.data import (
    SMS_MEMBER,
    DataError,
    balance,
    download_sms,
    random_split,
    read_labelled,
    read_mail,
)
from spamfilter.errors import DataError as SpamfilterDataError
from spamfilter.errors import UsageError
from spamfilter.labelled import read_labelled_texts, read_mail_texts


def test_full_file_is_read_without_merging_lines(sms_file: Path) -> None:
    frame = read_labelled(sms_file)
    assert len(frame) == 5574
    assert frame["Label"].value_counts().to_dict() == {0: 4827, 1: 747}


def test_balance_and_split_sizes_are_the_recipes(sms_file: Path) -> None:
    balanced = balance(read_labelled(sms_file))
    assert balanced["Label"].value_counts().to_dict() == {0: 747, 1: 747}
    splits = random_split(balanced)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1045, 149, 300)
    again = random_split(balance(read_labelled(sms_file)))
    pd.testing.assert_frame_equal(splits.test, again.test)
    other = random_split(balance(read_labelled(sms_file), seed=7), seed=7)
    assert not splits.test["Text"].equals(other.test["Text"])


def test_balance_keeps_both_classes_when_they_are_already_even() -> None:
    frame = pd.DataFrame({"Label": [1, 0, 1, 0, 1, 0], "Text": list("abcdef")})
    balanced = balance(frame)
    assert balanced["Label"].value_counts().to_dict() == {0: 3, 1: 3}
    assert sorted(balanced["Text"]) == list("abcdef")


def test_csv_with_header_and_label_words(tmp_path: Path) -> None:
    path = tmp_path / "mail.csv"
    path.write_text('text,LABEL\n"Hello, friend",not spam\nWIN NOW,spam\nlunch?,ham\n"x",1\n')
    frame = read_labelled(path)
    assert frame["Label"].tolist() == [0, 1, 0, 1]
    assert frame["Text"].tolist()[0] == "Hello, friend"


def test_missing_columns_and_bad_labels(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("subject,body\na,b\n")
    with pytest.raises(UsageError, match="label column"):  # a usage error (exit 2), as filter's
        read_labelled(path)
    path.write_text("label,text\nmaybe,hello\n")
    with pytest.raises(DataError, match="unknown label 'maybe'"):
        read_labelled(path)


def test_the_pandas_free_reader_is_the_one_parser(sms_file: Path, tmp_path: Path) -> None:
    texts, labels = read_labelled_texts(sms_file)
    frame = read_labelled(sms_file)
    assert (len(texts), sum(labels)) == (5574, 747)
    assert frame["Text"].tolist() == texts and frame["Label"].tolist() == labels
    path = tmp_path / "mail.tsv"
    path.write_text('Category\tMessage\tother\r\nspam\t"two\r\nlines"\tx\r\n\r\nham\tlunch\r\n')
    assert read_labelled_texts(path) == (["two\r\nlines", "lunch"], [1, 0])  # CSV quoting with a header


def test_reader_errors_are_one_line_data_errors(tmp_path: Path) -> None:
    assert DataError is SpamfilterDataError
    path = tmp_path / "wide.csv"
    path.write_text("label,text\nspam,a\nham,b,c\n")
    with pytest.raises(DataError, match=r"cannot parse .*wide.csv: line 3 has 3 fields"):
        read_labelled_texts(path)
    with pytest.raises(DataError, match="cannot read"):
        read_labelled_texts(tmp_path / "missing.csv")


def test_mail_readers_label_spam_then_ham(tmp_path: Path) -> None:
    (tmp_path / "spam.mbox").write_bytes(
        b"From a@b Thu Jan  1 00:00:00 2004\nSubject: WIN\n\ncash now\n\n"
        b"From c@d Thu Jan  1 00:00:00 2004\nSubject: FREE\n\nprize\n"
    )
    (tmp_path / "ham").mkdir()
    (tmp_path / "ham" / "1.eml").write_bytes(b"Subject: lunch\n\nat one?\n")
    texts, labels = read_mail_texts([tmp_path / "spam.mbox"], [tmp_path / "ham"])
    assert labels == [1, 1, 0] and "WIN" in texts[0] and "at one?" in texts[2]
    assert read_mail([tmp_path / "spam.mbox"], [tmp_path / "ham"])["Text"].tolist() == texts
    with pytest.raises(DataError, match="cannot read mail from"):
        read_mail_texts([tmp_path / "nowhere"], [])


def _zip_with(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "sms.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def test_download_verifies_and_caches(tmp_path: Path, sms_file: Path) -> None:
    good = _zip_with(tmp_path, {"readme": b"x", "../escape": b"evil", SMS_MEMBER: sms_file.read_bytes()})
    cache = tmp_path / "cache"
    seen: list[tuple[int, int | None]] = []
    path = download_sms(cache, urls=(good.as_uri(),), progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == sms_file.read_bytes()
    assert seen[-1] == (good.stat().st_size, good.stat().st_size)  # the progress bar's last update
    assert not (tmp_path / "escape").exists() and sorted(p.name for p in cache.iterdir()) == [SMS_MEMBER]
    # Cached: no URL needed the second time.
    assert download_sms(cache, urls=()) == path


def test_download_falls_back_to_the_mirror(tmp_path: Path, sms_file: Path) -> None:
    good = _zip_with(tmp_path, {SMS_MEMBER: sms_file.read_bytes()})
    missing = (tmp_path / "nope.zip").as_uri()
    path = download_sms(tmp_path / "cache", urls=(missing, good.as_uri()))
    assert path.is_file()


def test_corrupt_download_never_reaches_the_cache(tmp_path: Path, sms_file: Path) -> None:
    tampered = _zip_with(tmp_path, {SMS_MEMBER: sms_file.read_bytes()[:-10]})
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="sha256") as info:
        download_sms(cache, urls=(tampered.as_uri(),))
    assert "--data" in str(info.value)
    assert not (cache / SMS_MEMBER).exists()


def test_not_a_zip(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DataError, match="could not download"):
        download_sms(tmp_path / "cache", urls=(junk.as_uri(),))


def _closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: connecting is refused


def test_an_unreachable_host_is_tried_once_and_named_once(tmp_path: Path) -> None:
    host = f"127.0.0.1:{_closed_loopback_port()}"
    urls = (f"http://{host}/sms.zip", f"http://{host}/mirror/sms.zip")
    with pytest.raises(DataError) as info:
        download_sms(tmp_path / "cache", urls=urls)
    message = str(info.value)
    assert message.count(host) == 1 and "cannot reach" in message and "--data PATH" in message
    assert "\n" not in message


def test_an_unreachable_host_falls_back_to_another(tmp_path: Path, sms_file: Path) -> None:
    good = _zip_with(tmp_path, {SMS_MEMBER: sms_file.read_bytes()})
    urls = (f"http://127.0.0.1:{_closed_loopback_port()}/sms.zip", good.as_uri())
    assert download_sms(tmp_path / "cache", urls=urls).read_bytes() == sms_file.read_bytes()
