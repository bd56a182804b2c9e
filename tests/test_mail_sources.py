"""--spam/--ham as mail comes: folders of RFC 822 files whatever their names, the corpus tarballs read
without extracting (links, '..' paths, oversized members and non-messages skipped; corrupt archives
a one-line DataError), and messages given in both classes dropped from both."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA, split_messages

from spamfilter.cli import cli
from spamfilter.errors import DataError
from spamfilter.labelled import message_key, read_mail_texts
from spamfilter.mail import iter_mail_source, mail_folder_files, mailboxes

CORPUS = SHARED_DATA / "spamassassin"
CMDS = b"mv 00001.7c53336b37003a9286aba55d2945844c 00001.7c53336b37003a9286aba55d2945844c\n"


@pytest.fixture(scope="module")
def spam_messages() -> list[bytes]:
    return split_messages((CORPUS / "spam.mbox").read_bytes())[:6]


@pytest.fixture(scope="module")
def ham_messages() -> list[bytes]:
    return split_messages((CORPUS / "easy_ham.mbox").read_bytes())[:6]


def corpus_name(number: int) -> str:
    return f"{number:05d}.{number:032x}"


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def make_tarball(path: Path, messages: list[bytes], mode: str = "w:gz", extras: bool = True) -> Path:
    """A corpus-shaped tarball: a folder entry, messages named like the corpus's, its `cmds` file, and
    (``extras``) a symlink, a hard link, a '../evil' member, an absolute path and an oversized one."""
    with tarfile.open(path, mode) as archive:
        folder = tarfile.TarInfo("spam")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for number, raw in enumerate(messages, 1):
            add_bytes(archive, f"spam/{corpus_name(number)}", raw)
        add_bytes(archive, "spam/cmds", CMDS)
        if extras:
            for kind, name in ((tarfile.SYMTYPE, "spam/link"), (tarfile.LNKTYPE, "spam/hard")):
                link = tarfile.TarInfo(name)
                link.type, link.linkname = kind, "/etc/passwd"
                archive.addfile(link)
            add_bytes(archive, "../evil", messages[0])
            add_bytes(archive, "/abs/evil", messages[0])
            add_bytes(archive, "spam/huge", messages[0] + b"x" * (mailboxes.MAX_MEMBER_BYTES + 1))
    return path


@pytest.mark.parametrize(("mode", "suffix"), [("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w", ".tar")])
def test_tarball_yields_messages_in_archive_order(
    tmp_path: Path, spam_messages: list[bytes], mode: str, suffix: str
) -> None:
    tarball = make_tarball(tmp_path / f"spam{suffix}", spam_messages, mode)
    skipped: Counter[str] = Counter()
    assert list(iter_mail_source(tarball, skipped)) == spam_messages
    assert skipped == {
        mailboxes.SKIPPED_NOT_MAIL: 1,  # cmds
        mailboxes.SKIPPED_NOT_REGULAR: 2,  # symlink, hard link
        mailboxes.SKIPPED_UNSAFE_PATH: 2,  # ../evil, /abs/evil
        mailboxes.SKIPPED_TOO_LARGE: 1,
    }
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_tarball_is_recognised_by_content_too(tmp_path: Path, spam_messages: list[bytes]) -> None:
    tarball = make_tarball(tmp_path / "spam.tgz", spam_messages, extras=False)
    renamed = tarball.rename(tmp_path / "20030228_spam")  # the corpus's own names have .tar.bz2
    assert list(iter_mail_source(renamed)) == spam_messages


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w"])
def test_truncated_or_corrupt_tarball_is_one_line_data_error(
    tmp_path: Path, spam_messages: list[bytes], mode: str
) -> None:
    tarball = make_tarball(tmp_path / "spam.tar", spam_messages, mode, extras=False)
    data = tarball.read_bytes()
    tarball.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        read_mail_texts([tarball], [])
    assert str(tarball) in str(info.value) and "\n" not in str(info.value)


def test_garbage_with_a_tar_name_is_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "spam.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        read_mail_texts([bad], [])


def test_member_count_cap_stops_a_tar_bomb(
    tmp_path: Path, spam_messages: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = make_tarball(tmp_path / "spam.tar.gz", spam_messages, extras=False)
    monkeypatch.setattr(mailboxes, "MAX_ARCHIVE_MEMBERS", 3)
    with pytest.raises(DataError, match="more than 3 archive members"):
        read_mail_texts([tarball], [])
    monkeypatch.setattr(mailboxes, "MAX_ARCHIVE_MEMBERS", 1000)
    monkeypatch.setattr(mailboxes, "MAX_ARCHIVE_BYTES", len(spam_messages[0]) + 1)
    with pytest.raises(DataError, match="bytes of members"):
        read_mail_texts([tarball], [])


def test_folder_of_corpus_named_files(tmp_path: Path, ham_messages: list[bytes]) -> None:
    folder = tmp_path / "easy_ham"
    folder.mkdir()
    for number, raw in enumerate(ham_messages, 1):
        (folder / corpus_name(number)).write_bytes(raw)
    (folder / "cmds").write_bytes(CMDS)
    skipped: Counter[str] = Counter()
    files = mail_folder_files(folder, skipped)
    assert [f.name for f in files] == [corpus_name(n) for n in range(1, 7)]
    assert skipped == {mailboxes.SKIPPED_NOT_MAIL: 1}
    assert list(iter_mail_source(folder)) == ham_messages
    (folder / "notes.eml").write_bytes(b"Subject: with .eml files there, only they count\n\nhi\n")
    assert [f.name for f in mail_folder_files(folder)] == ["notes.eml"]


def test_folder_without_messages_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cmds").write_bytes(CMDS)
    with pytest.raises(ValueError, match="neither a Maildir nor holds mail files"):
        mail_folder_files(tmp_path)


def test_skipped_files_are_reported_in_one_line(
    tmp_path: Path, spam_messages: list[bytes], ham_messages: list[bytes]
) -> None:
    tarball = make_tarball(tmp_path / "spam.tar.bz2", spam_messages, "w:bz2")
    folder = tmp_path / "ham"
    folder.mkdir()
    for number, raw in enumerate(ham_messages, 1):
        (folder / corpus_name(number)).write_bytes(raw)
    (folder / "cmds").write_bytes(CMDS)
    warnings: list[str] = []
    texts, labels = read_mail_texts([tarball], [folder], warnings.append)
    assert labels == [1] * 6 + [0] * 6 and len(texts) == 12
    assert warnings == [
        f"{tarball}: 6 files skipped: 2 a link or special file, 2 an absolute or '..' path, "
        f"1 not a message, 1 larger than 10 MiB",
        f"{folder}: 1 file skipped: 1 not a message",
    ]


def test_message_key_ignores_from_line_and_x_spam_headers(spam_messages: list[bytes]) -> None:
    raw = b"Return-Path: <a@example.org>\nSubject: hi\n\nbody\n"
    variants = [
        b"From a@example.org Mon Jan  1 00:00:00 2024\n" + raw + b"\n",
        b"From b@example.org Tue Feb  2 11:11:11 2025\n" + raw,
        raw.replace(b"\n", b"\r\n"),
        b"X-Spam-Status: Yes, score=9.1\n\trequired=5.0\nX-Spam-Level: *****\n" + raw,
    ]
    assert {message_key(v) for v in variants} == {message_key(raw)}
    assert message_key(raw.replace(b"body", b"bodY")) != message_key(raw)
    assert message_key(raw.replace(b"\n\nbody", b"\n\nX-Spam-Flag: in the body\n")) != message_key(raw)


def test_messages_in_both_classes_are_dropped_from_both(
    tmp_path: Path, spam_messages: list[bytes], ham_messages: list[bytes]
) -> None:
    spam_box = tmp_path / "spam.mbox"
    spam_box.write_bytes(b"".join(spam_messages))
    ham = tmp_path / "ham"
    ham.mkdir()
    shared = spam_messages[2]
    # the same message filed as ham too: its From_ line gone, a verdict header added, twice
    copy = shared.split(b"\n", 1)[1]
    (ham / "00001.copy").write_bytes(b"X-Spam-Flag: NO\n" + copy)
    (ham / "00002.copy").write_bytes(copy)
    for number, raw in enumerate(ham_messages, 3):
        (ham / corpus_name(number)).write_bytes(raw)
    warnings: list[str] = []
    texts, labels = read_mail_texts([spam_box], [ham], warnings.append)
    assert labels == [1] * 5 + [0] * 6
    assert warnings == [
        "1 message was given as both spam and ham: dropped from both classes (1 spam and 2 ham copies)"
    ]
    assert read_mail_texts([spam_box], [spam_box]).texts == []  # one mbox as both classes: nothing left


def test_eval_reads_a_tarball_and_a_corpus_folder(
    trained_model: Path, tmp_path: Path, spam_messages: list[bytes], ham_messages: list[bytes]
) -> None:
    tarball = make_tarball(tmp_path / "20030228_spam.tar.bz2", spam_messages, "w:bz2")
    folder = tmp_path / "easy_ham"
    folder.mkdir()
    for number, raw in enumerate([*ham_messages, spam_messages[0]], 1):
        (folder / corpus_name(number)).write_bytes(raw)
    (folder / "cmds").write_bytes(CMDS)
    result = CliRunner().invoke(
        cli, ["eval", "--spam", str(tarball), "--ham", str(folder), "--model", str(trained_model)]
    )
    assert result.exit_code == 0, result.output
    assert "6 files skipped" in result.stderr and "1 file skipped: 1 not a message" in result.stderr
    assert "1 message was given as both spam and ham" in result.stderr
    assert "accuracy" in result.stdout.lower()

    tarball.write_bytes(tarball.read_bytes()[:200])
    broken = CliRunner().invoke(
        cli, ["eval", "--spam", str(tarball), "--ham", str(folder), "--model", str(trained_model)]
    )
    assert broken.exit_code == DataError.exit_code
    assert "Traceback" not in broken.output and "corrupt or truncated archive" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


def test_filter_tags_a_folder_of_corpus_named_files(
    trained_model: Path, tmp_path: Path, ham_messages: list[bytes]
) -> None:
    folder = tmp_path / "easy_ham"
    folder.mkdir()
    for number, raw in enumerate(ham_messages[:3], 1):
        (folder / corpus_name(number)).write_bytes(raw)
    (folder / "cmds").write_bytes(CMDS)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["filter", str(folder), "-o", str(out), "--model", str(trained_model)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [corpus_name(n) for n in (1, 2, 3)]  # cmds not copied
    tagged = (out / corpus_name(1)).read_bytes()
    assert tagged.startswith(b"From ") and tagged.count(b"X-Spam-Flag: ") >= 1


def test_a_huge_or_linked_file_in_a_mail_folder_is_skipped_and_counted(
    tmp_path: Path, ham_messages: list[bytes]
) -> None:
    """Training and ``learn`` read a folder's files whole: a sparse 8 GiB file (4 KiB on disk)
    ended in a MemoryError traceback, and a link to /dev/zero read until memory ran out. Files
    over MAX_FOLDER_FILE_BYTES, links and special files are skipped and counted."""
    folder = tmp_path / "mail"
    (folder / "cur").mkdir(parents=True)
    (folder / "cur" / "1.host").write_bytes(ham_messages[0])
    with (folder / "cur" / "2.host").open("wb") as huge:
        huge.truncate(mailboxes.MAX_FOLDER_FILE_BYTES + 1)  # sparse: no disk, and no memory now
    (folder / "cur" / "3.host").symlink_to("/dev/zero")
    skipped: Counter[str] = Counter()
    assert list(iter_mail_source(folder, skipped)) == [ham_messages[0]]
    assert skipped == {mailboxes.SKIPPED_UNREADABLE: 1, mailboxes.SKIPPED_NOT_REGULAR: 1}
