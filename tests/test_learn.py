"""``spamfilter learn``: corrections kept with the model, the head retrained, harmful retrains refused.

The model is the session's SMS model (tests/conftest.py), which marks most real email as spam:
that gives real false positives to correct. Messages come from the SpamAssassin public corpus."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.corpus import CORPUS, email_false_positive

from spamfilter.cli import cli
from spamfilter.corrections import CORRECTIONS_DIR, Corrections
from spamfilter.learn import FEATURES_FILE, HeldOut, worse
from spamfilter.mail import iter_mail_source
from spamfilter.pipeline import message_text
from spamfilter.runtime import Classifier


def _learn(*args: str) -> object:
    return CliRunner().invoke(cli, ["learn", *args], catch_exceptions=False)


def _digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".")  # not the retrain's lock file
    }


def test_training_writes_the_features_learn_needs(trained_model: Path) -> None:
    from safetensors.numpy import load_file

    manifest = json.loads((trained_model / "spamfilter.json").read_text())
    tensors = load_file(trained_model / FEATURES_FILE)
    sizes = [len(tensors[f"{name}_labels"]) for name in ("train", "validation", "test")]
    assert sizes == manifest["recipe"]["split_sizes"]
    assert tensors["train_features"].shape == (sizes[0], manifest["base_model"]["config"]["n_embd"])


def test_a_corrected_false_positive_moves_to_ham(model_copy: Path, tmp_path: Path) -> None:
    raw = email_false_positive(model_copy)
    message = tmp_path / "wanted.eml"
    message.write_bytes(raw)
    result = _learn("--ham", str(message), "--model", str(model_copy))
    assert result.exit_code == 0, result.output
    assert "retrained the head on 0 spam and 1 ham corrections" in result.output
    classifier = Classifier.load(model_copy)
    assert classifier.spam_probability([message_text(raw)])[0] < classifier.threshold
    manifest = json.loads((model_copy / "spamfilter.json").read_text())
    learnt = manifest["metrics"]["learnt"]
    assert learnt["ham"] == 1
    assert learnt["after"]["ham_marked_spam"] <= learnt["before"]["ham_marked_spam"]
    assert Corrections(model_copy).pending() == 0
    assert len(list((model_copy / CORRECTIONS_DIR / "ham").glob("*.eml"))) == 1
    # Forgotten, the correction is pending again (the head still carries it) until a retrain
    # without it.
    assert Corrections(model_copy).remove(raw)
    assert Corrections(model_copy).pending() == 1
    again = _learn("--retrain", "--model", str(model_copy))
    assert again.exit_code == 0, again.output
    assert "retrained the head on 0 spam and 0 ham corrections" in again.output
    assert Corrections(model_copy).pending() == 0


def test_a_harmful_retrain_is_refused_and_changes_nothing(
    model_copy: Path, tmp_path: Path, sms_file: Path
) -> None:
    # Sixty SMS spam filed as ham: the head would have to call spam ham, which the held-out split shows.
    spam = [line.split("\t", 1)[1] for line in sms_file.read_text().splitlines() if line.startswith("spam\t")]
    folder = tmp_path / "misfiled"
    folder.mkdir()
    for i, text in enumerate(spam[:60]):
        (folder / f"{i}.eml").write_text(f"From: someone@example.org\nSubject: \n\n{text}\n")
    before = _digests(model_copy)
    result = CliRunner().invoke(cli, ["learn", "--ham", str(folder), "--model", str(model_copy)])
    assert result.exit_code == 3, result.output
    assert "retrain refused, the model is unchanged: learning the 59 corrections" in result.output
    assert "it misses more held-out spam" in result.output and "chance explains up to" in result.output
    assert _digests(model_copy) == before
    # Kept, to be looked at (nothing was learnt); the collection repeats some texts: kept once each.
    assert Corrections(model_copy).pending() == len(set(spam[:60]))


def test_corrections_wait_for_retrain_after(model_copy: Path, tmp_path: Path) -> None:
    messages = list(iter_mail_source(CORPUS / "spam.mbox"))[:3]
    files = []
    for i, raw in enumerate(messages):
        files.append(tmp_path / f"{i}.eml")
        files[-1].write_bytes(raw)
    before = _digests(model_copy)
    result = _learn(
        "--spam", str(files[0]), "--spam", str(files[1]), "--model", str(model_copy), "--retrain-after", "3"
    )
    assert result.exit_code == 0
    assert "kept 2 new spam and 0 new ham corrections; 2 waiting to be learnt" in result.output
    assert _digests(model_copy) == before  # nothing retrained yet
    # The same message again is kept once; filed as ham it moves, still one correction.
    _learn("--spam", str(files[0]), "--model", str(model_copy), "--retrain-after", "3")
    assert Corrections(model_copy).pending() == 2
    _learn("--ham", str(files[0]), "--model", str(model_copy), "--retrain-after", "3")
    assert sorted(label for _, label, _ in Corrections(model_copy)) == [0, 1]


def test_learn_says_what_is_wrong_in_one_line(model_copy: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(cli, ["learn", "--model", str(model_copy)])
    assert nothing.exit_code == 2 and "give --spam or --ham" in nothing.output
    empty = runner.invoke(cli, ["learn", "--spam", "-", "--model", str(model_copy)], input=b"")
    assert empty.exit_code == 2 and "no message on stdin" in empty.output
    (model_copy / FEATURES_FILE).unlink()
    (tmp_path / "m.eml").write_bytes(b"Subject: hi\n\nhello\n")
    old = runner.invoke(cli, ["learn", "--ham", str(tmp_path / "m.eml"), "--model", str(model_copy)])
    assert old.exit_code == 1
    assert "learn.safetensors is missing" in old.output and "Traceback" not in old.output
    missing = runner.invoke(
        cli, ["learn", "--ham", str(tmp_path / "m.eml"), "--model", str(tmp_path / "none")]
    )
    assert missing.exit_code == 1 and "no model directory" in missing.output


def test_worse_allows_what_chance_explains_on_a_split_of_that_size() -> None:
    # 2 of 500 ham at a 0.5 % budget: the count's standard deviation is 1.58, two of them 3.2 -> 4.
    before = HeldOut(0.5, ham_marked_spam=2, ham=500, spam_missed=5, spam=300)
    assert worse(before, HeldOut(0.5, 6, 500, 5, 300), target_fpr=0.005) is None
    refused = worse(before, HeldOut(0.5, 7, 500, 5, 300), target_fpr=0.005)
    assert refused is not None and "7 of 500 instead of 2; chance explains up to 4 more" in refused
    # Without a budget the rate is the one before (0.4 %): 2.8 -> 3.
    assert worse(before, HeldOut(0.5, 6, 500, 5, 300)) is not None
    # 5 of 300 spam missed: 2 * sqrt(300 * 0.0167 * 0.983) = 4.4 -> 5 more (above 1 % of 300).
    assert worse(before, HeldOut(0.5, 2, 500, 10, 300)) is None
    assert worse(before, HeldOut(0.5, 2, 500, 11, 300)) is not None
    assert worse(before, HeldOut(0.5, 0, 500, 0, 300)) is None
    # A split of 20 ham: the rate is taken as at least one message (1 in 20): 2 more.
    assert worse(HeldOut(0.5, 0, 20, 0, 5), HeldOut(0.5, 1, 20, 0, 5)) is None


def test_the_threshold_is_never_lowered_and_raised_to_keep_the_validation_ham_budget() -> None:
    import numpy as np

    from spamfilter.head import Head
    from spamfilter.learn import threshold_for

    # One feature; P(spam) = sigmoid(scale * x). Validation: ham at -1 .. 0.5, spam at 2.
    features = np.array([[-1.0], [0.0], [0.5], [2.0]])
    labels = np.array([0, 0, 0, 1])

    def head(scale: float, shift: float = 0.0) -> Head:
        return Head(np.array([[0.0], [scale]]), np.array([0.0, shift]))

    start = head(1.0)  # at 0.7 it flags no validation ham (the highest, 0.5, scores 0.62)
    assert threshold_for(head(0.5), start, features, labels, 0.7) == 0.7  # never lowered
    raised = threshold_for(head(1.0, shift=1.0), start, features, labels, 0.7)  # ham at 0.5 now 0.82
    assert raised > 0.82 and raised < 0.95  # just above that ham, below the spam (0.95)


def test_learn_writes_no_file_through_a_link_in_the_model_directory(model_copy: Path, tmp_path: Path) -> None:
    """A model directory from elsewhere can carry links: ``learn`` wrote its eval.json, roc.png
    and the corrections' records through them, into whatever they named (a user's ~/.bashrc).
    Each is now made under a fresh name and renamed over the link."""
    victims = {}
    for name in ("eval.json", "roc.png", f"{CORRECTIONS_DIR}/learnt.json"):
        victim = tmp_path / name.replace("/", "-")
        victim.write_text("the user's own file\n")
        link = model_copy / name
        link.parent.mkdir(exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(victim)
        victims[name] = victim
    message = tmp_path / "fp.eml"
    message.write_bytes(email_false_positive(model_copy))
    result = _learn("--ham", str(message), "--model", str(model_copy))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    for name, victim in victims.items():
        assert victim.read_text() == "the user's own file\n", name
        assert not (model_copy / name).is_symlink(), name
    assert json.loads((model_copy / "eval.json").read_text())


def test_learn_refuses_a_damaged_model_file_rather_than_record_it_as_whole(
    model_copy: Path, tmp_path: Path
) -> None:
    """``learn`` rewrote every ONNX file with the new head and recorded new sha256s without
    checking the old: a file damaged after export (refused where it is loaded) came out of a
    retrain recorded as whole, and was then loaded with its damage."""
    manifest = json.loads((model_copy / "spamfilter.json").read_text())
    variant = next(iter(manifest["variants"].values()))["file"]
    damaged = bytearray((model_copy / variant).read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    (model_copy / variant).write_bytes(bytes(damaged))
    before = _digests(model_copy)
    message = tmp_path / "fp.eml"
    message.write_bytes(email_false_positive(model_copy))
    result = CliRunner().invoke(cli, ["learn", "--ham", str(message), "--model", str(model_copy)])
    assert result.exit_code == 1, result.output
    assert "does not match the sha256" in result.output and "Traceback" not in result.output
    after = _digests(model_copy)
    model_files = [name for name in before if name.endswith(".onnx") or name == "spamfilter.json"]
    assert [after[name] for name in model_files] == [before[name] for name in model_files]


def test_records_nested_thousands_deep_are_one_line_or_none(model_copy: Path) -> None:
    """JSON nested thousands deep (a RecursionError) in learn.safetensors' header was a traceback;
    in the corrections' learnt record, a traceback from every TELL count."""
    import struct

    from spamfilter.learn import read_features

    corrections = Corrections(model_copy)
    corrections.add(b"Subject: x\n\nhello\n", 1)
    (model_copy / CORRECTIONS_DIR / "learnt.json").write_text("[" * 100_000 + "]" * 100_000)
    assert corrections.learnt() == {} and corrections.pending() == 1
    header = b"[" * 100_000 + b"]" * 100_000
    (model_copy / FEATURES_FILE).write_bytes(struct.pack("<Q", len(header)) + header)
    result = CliRunner().invoke(cli, ["learn", "--retrain", "--model", str(model_copy)])
    assert result.exit_code == 1 and "is damaged" in result.output and "Traceback" not in result.output
    with pytest.raises(Exception, match="is damaged"):
        read_features(model_copy)


def test_features_or_a_graph_of_another_model_are_one_line(model_copy: Path, tmp_path: Path) -> None:
    """learn.safetensors of another model (features 7 wide for a head that reads 128) ended in
    numpy's shape error; an ONNX file that is broken but whose recorded sha256 matches it (its
    manifest edited too) in onnxruntime's. Each is one line now, exit 1."""
    import shutil

    import numpy as np

    from spamfilter.learn import write_features

    message = tmp_path / "fp.eml"
    message.write_bytes(email_false_positive(model_copy))
    foreign = model_copy.parent / "foreign"
    shutil.copytree(model_copy, foreign)
    labels = {name: np.zeros(3, dtype=np.int64) for name in ("train", "validation", "test")}
    write_features(foreign, {name: np.ones((3, 7), np.float32) for name in labels}, labels)
    result = CliRunner().invoke(cli, ["learn", "--ham", str(message), "--model", str(foreign)])
    assert result.exit_code == 1 and "holds features of width 7" in result.output, result.output
    manifest = json.loads((model_copy / "spamfilter.json").read_text())
    name = manifest["variants"][manifest["default_variant"]]["file"] if manifest.get("variants") else None
    name = name or manifest["onnx"]["file"]
    broken = (model_copy / name).read_bytes()[:5000]
    (model_copy / name).write_bytes(broken)
    for entry in [manifest["onnx"], *manifest.get("variants", {}).values()]:
        if entry["file"] == name:
            entry["sha256"] = hashlib.sha256(broken).hexdigest()
    (model_copy / "spamfilter.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["learn", "--ham", str(message), "--model", str(model_copy)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: cannot use "), result.output


def test_learn_user_over_the_byte_quota_is_one_line(model_copy: Path, tmp_path: Path) -> None:
    """Past --max-user-correction-bytes (20 MB by default) `learn --user` ended in a traceback:
    the quota's error was not one of the package's."""
    folder = tmp_path / "ham"
    folder.mkdir()
    for i in range(45):  # 45 x 500 KB: over 20,000,000 bytes
        (folder / f"{i:03d}.eml").write_bytes(b"Subject: big %d\n\n" % i + b"word " * 100_000)
    result = CliRunner().invoke(
        cli, ["learn", "--user", "alice", "--ham", str(folder), "--model", str(model_copy)]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: alice keeps "), result.output
