"""``train --members N``: runs from different seeds read as one model, their log-odds averaged.

The ensemble module against its members, a trained ensemble through the real export, runtime,
``learn`` and ``export``, and ``--resume`` in the middle of the second member."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from spamfilter.cli import cli
from spamfilter.data import Splits
from spamfilter.errors import TrainingError, UsageError
from spamfilter.export import load_checkpoint
from spamfilter.finetune import fine_tune
from spamfilter.learn import current_head
from spamfilter.mail import extract_text, iter_mail_source
from spamfilter.members import FINISHED_MEMBER
from spamfilter.model import GPT, GPTConfig, SpamClassifier, SpamEnsemble, add_classification_head
from spamfilter.runtime import Classifier
from spamfilter.train_loop import TrainingConfig
from spamfilter.train_options import TrainOptions

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "spamassassin"
SHAPE = {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 64}


def _member(seed: int, pooling: str = "line-ends", **shape: int) -> SpamClassifier:
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(**{**SHAPE, **shape}))
    return SpamClassifier(add_classification_head(gpt), pooling)


def _log_odds(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, 1] - logits[:, 0]


def _ids(rows: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50000, (rows, length), generator=generator)
    ids[:, 5::7] = 198  # line ends for line-ends pooling to choose among
    ids[:, length - 9 :] = 50256  # padding
    return ids


@pytest.mark.parametrize("pooling", ["line-ends", "last-token"])
def test_the_ensembles_log_odds_are_the_mean_of_its_members(pooling: str) -> None:
    members = [_member(seed, pooling) for seed in (1, 2, 3)]
    ensemble = SpamEnsemble(members).eval()
    ids = _ids(6, 48, 0)
    with torch.no_grad():
        expected = torch.stack([_log_odds(m(ids)) for m in members]).mean(dim=0)
        got = _log_odds(ensemble(ids))
        # the exported path: every position read, then each member's own choice among them
        pooled = ensemble.gpt.lm_head(ensemble.most_spam_like(ensemble.read_features(ids)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_log_odds(pooled), expected, rtol=1e-5, atol=1e-5)
    assert ensemble.features(ids).shape == (6, 3 * SHAPE["n_embd"])
    # the members do choose differently: one head choosing for all would not give the mean above
    if pooling == "line-ends":
        reads = [m.read_features(ids) for m in members]
        choices = [_log_odds(m.gpt.lm_head(r)).argmax(dim=1) for m, r in zip(members, reads, strict=True)]
        assert any(not torch.equal(choices[0], other) for other in choices[1:])


def test_members_of_another_shape_or_pooling_are_refused() -> None:
    with pytest.raises(ValueError, match="shape and pooling"):
        SpamEnsemble([_member(1), _member(2, n_embd=64)])
    with pytest.raises(ValueError, match="shape and pooling"):
        SpamEnsemble([_member(1), _member(2, "last-token")])


def _splits() -> Splits:
    """48 spam and 72 ham of the SpamAssassin corpus as the filter reads them, split 84 / 12 / 24."""
    spam = [extract_text(raw) for raw in list(iter_mail_source(CORPUS / "spam.mbox"))[:48]]
    ham = [extract_text(raw) for raw in list(iter_mail_source(CORPUS / "easy_ham.mbox"))[:72]]
    frame = pd.DataFrame({"Label": [1] * len(spam) + [0] * len(ham), "Text": spam + ham})
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return Splits(frame[:84], frame[84:96], frame[96:])


@pytest.fixture(scope="module")
def splits() -> Splits:
    return _splits()


def _options(tmp: Path, members: int, **changes: object) -> TrainOptions:
    config = tmp / "shape.json"
    config.write_text(json.dumps(SHAPE))
    return replace(
        TrainOptions(
            model=str(config),
            weights="random",
            spam=[CORPUS / "spam.mbox"],  # the mail recipe; the messages come from `splits`
            max_length=48,
            members=members,
            training=TrainingConfig(epochs=2, lr=1e-3, trainable="all", batch_size=8),
            out=tmp / f"model-{members}",
        ),
        **changes,
    )


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory: pytest.TempPathFactory, splits: Splits) -> Path:
    options = _options(tmp_path_factory.mktemp("members"), 2)
    fine_tune(options, splits=splits, data_origin="mail: test")
    return options.out


def test_an_ensemble_trains_exports_and_scores_as_the_mean_of_its_members(
    ensemble_dir: Path, splits: Splits, tmp_path: Path
) -> None:
    manifest = json.loads((ensemble_dir / "spamfilter.json").read_text())
    record = json.loads((ensemble_dir / "training.json").read_text())
    assert manifest["recipe"]["members"] == 2
    assert [m["seed"] for m in record["members"]] == [123, 1123]
    assert not list(ensemble_dir.glob(FINISHED_MEMBER.format("*")))  # nothing left to resume
    model, _ = load_checkpoint(ensemble_dir / "model.pt")
    assert isinstance(model, SpamEnsemble)
    # the first member is the model a single run with the same seed trains
    single = _options(tmp_path, 1)
    fine_tune(single, splits=splits, data_origin="mail: test")
    alone, _ = load_checkpoint(single.out / "model.pt")
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(model.members[0].state_dict()[name], value)
    # the filter's runtime (fp32, no int8 rounding) against the members' mean log-odds in torch
    texts = splits.test["Text"].tolist()
    classifier = Classifier.load(ensemble_dir, variant="fp32")
    classifier.max_windows = 1  # each text's first window, as the members read it below
    classifier.use_memory = False  # the model alone: its memory of the training mail moves some texts
    p = np.clip(classifier.spam_probability(texts), 1e-9, 1 - 1e-9)
    members = [
        np.log(q / (1 - q))
        for q in (np.clip(_first_window(m, classifier, texts), 1e-9, 1 - 1e-9) for m in model.members)
    ]
    assert np.ptp(members[0] - members[1]) > 0.01  # two members that disagree: a mean to check
    np.testing.assert_allclose(np.log(p / (1 - p)), np.mean(members, axis=0), rtol=1e-4, atol=1e-4)


def _first_window(member: torch.nn.Module, classifier: Classifier, texts: list[str]) -> np.ndarray:
    """P(spam) of each text's first window by one member alone, through torch."""
    ids = torch.tensor(classifier.tokenizer.pad(classifier.tokenizer.encode_batch(texts), 48))
    with torch.no_grad():
        return torch.softmax(member(ids), dim=-1)[:, 1].double().numpy()


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_a_user_head_equal_to_the_shared_one_gives_the_shared_verdicts(
    ensemble_dir: Path, splits: Splits, variant: str
) -> None:
    """Another head reads the features the members chose, as the graph's own head does (were it to
    choose among rows of every member's features at one position, it would score another function:
    up to 0.16 apart in P(spam) on a model like this one)."""
    classifier = Classifier.load(ensemble_dir, variant=variant)
    texts = splits.test["Text"].tolist()
    head = current_head(classifier.directory)
    shared = classifier.spam_probability(texts)
    as_user = classifier.spam_probability(texts, heads=[head] * len(texts))
    np.testing.assert_allclose(as_user, shared, atol=1e-5)


def test_the_members_heads_stay_fp32_in_the_int8_file(ensemble_dir: Path) -> None:
    import onnx

    graph = onnx.load(str(ensemble_dir / "model.int8.onnx")).graph
    two_columns = [t for t in graph.initializer if len(t.dims) == 2 and t.dims[-1] == 2]
    assert len(two_columns) >= 2  # each member's head, transposed, to choose its line end
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in two_columns)
    assert not [t.name for t in graph.initializer if t.name.endswith("_quantized") and t.dims[-1] == 2]


def test_learn_retrains_the_ensembles_head_and_a_users(ensemble_dir: Path, tmp_path: Path) -> None:
    spam = tmp_path / "spam.mbox"
    with open(spam, "wb") as out:
        for raw in list(iter_mail_source(CORPUS / "spam.mbox"))[200:210]:
            out.write(b"From x@example.org Mon Jan  1 00:00:00 2024\n" + raw.rstrip(b"\n") + b"\n\n")
    model = tmp_path / "model"
    model.mkdir()
    for path in ensemble_dir.iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    runner = CliRunner()
    shared = runner.invoke(cli, ["learn", "-m", str(model), "--spam", str(spam)])
    assert shared.exit_code in (0, 3), shared.output  # retrained, or refused as worse held out
    assert "Traceback" not in shared.output
    user = runner.invoke(cli, ["learn", "-m", str(model), "--user", "alice", "--spam", str(spam)])
    assert user.exit_code == 0, user.output
    filtered = runner.invoke(cli, ["filter", "-m", str(model), "--user", "alice", str(spam), "-o", "-"])
    assert filtered.exit_code in (0, 1), filtered.output
    assert filtered.output.count("X-Spam-Status:") == 10


class _Stop(Exception):
    pass


def test_resume_in_the_second_member_gives_the_uninterrupted_run(
    ensemble_dir: Path, splits: Splits, tmp_path: Path
) -> None:
    options = _options(tmp_path, 2)
    epochs_seen = []

    def stop_in_the_second_member(epoch: object) -> None:
        epochs_seen.append(epoch)
        if len(epochs_seen) == 3:  # member 1's two epochs, then member 2's first
            raise _Stop

    with pytest.raises(_Stop):
        fine_tune(options, splits=splits, data_origin="mail: test", on_epoch=stop_in_the_second_member)
    assert (options.out / FINISHED_MEMBER.format(0)).is_file()
    assert (options.out / "training-state.pt").is_file()
    resumed_epochs = []
    fine_tune(
        replace(options, resume=True), splits=splits, data_origin="mail: test", on_epoch=resumed_epochs.append
    )
    assert len(resumed_epochs) == 1  # only member 2's second epoch ran again
    resumed = json.loads((options.out / "training.json").read_text())
    whole = json.loads((ensemble_dir / "training.json").read_text())
    np.testing.assert_allclose(resumed["test_spam_probability"], whole["test_spam_probability"], atol=1e-6)
    losses = [run["members"][1]["validation_losses"] for run in (resumed, whole)]
    assert losses[0] == pytest.approx(losses[1])


def test_resume_refuses_a_finished_member_of_other_options(splits: Splits, tmp_path: Path) -> None:
    options = _options(tmp_path, 2)

    def stop_at_the_second_member(epoch: object) -> None:
        if (options.out / FINISHED_MEMBER.format(0)).is_file():
            raise _Stop

    with pytest.raises(_Stop):
        fine_tune(options, splits=splits, data_origin="mail: test", on_epoch=stop_at_the_second_member)
    (options.out / "training-state.pt").unlink()
    other = replace(options, resume=True, training=replace(options.training, lr=5e-4))
    with pytest.raises(TrainingError, match="other options or data"):
        fine_tune(other, splits=splits, data_origin="mail: test")


@pytest.mark.parametrize("members", ["0", "9"])
def test_members_out_of_range_are_a_usage_error(members: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--members", members, "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "--members" in result.output


def test_a_fresh_run_drops_the_members_an_earlier_run_left(splits: Splits, tmp_path: Path) -> None:
    options = _options(tmp_path, 2)

    def stop_in_the_second_member(epoch: object) -> None:
        if (options.out / FINISHED_MEMBER.format(0)).is_file():
            raise _Stop

    with pytest.raises(_Stop):  # member 1 finished with lr 1e-3
        fine_tune(options, splits=splits, data_origin="mail: test", on_epoch=stop_in_the_second_member)
    (options.out / FINISHED_MEMBER.format(0)).rename(options.out / FINISHED_MEMBER.format(1))
    other = replace(options, training=replace(options.training, lr=5e-4))
    with pytest.raises(_Stop):  # a new run, not resumed: the old member files are not its own
        fine_tune(other, splits=splits, data_origin="mail: test", on_epoch=stop_in_the_second_member)
    assert not (options.out / FINISHED_MEMBER.format(1)).exists()
    fine_tune(replace(other, resume=True), splits=splits, data_origin="mail: test")
    assert json.loads((options.out / "spamfilter.json").read_text())["recipe"]["members"] == 2


def test_a_single_run_does_not_resume_from_member_files(splits: Splits, tmp_path: Path) -> None:
    options = _options(tmp_path, 1)
    options.out.mkdir(parents=True)
    (options.out / FINISHED_MEMBER.format(0)).write_bytes(b"not this run's")
    with pytest.raises(TrainingError, match="nothing to resume"):
        fine_tune(replace(options, resume=True), splits=splits, data_origin="mail: test")


def test_train_members_from_the_command_line(tmp_path: Path) -> None:
    """The option reaches the run: two members trained, named in the summary and the manifest."""
    spam = tmp_path / "spam.mbox"
    ham = tmp_path / "ham.mbox"
    for path, source, count in ((spam, "spam.mbox", 30), (ham, "easy_ham.mbox", 50)):
        with open(path, "wb") as out:
            for raw in list(iter_mail_source(CORPUS / source))[:count]:
                out.write(b"From x@example.org Mon Jan  1 00:00:00 2024\n" + raw.rstrip(b"\n") + b"\n\n")
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps(SHAPE))
    out = tmp_path / "model"
    result = CliRunner().invoke(
        cli,
        ["train", "--model", str(shape), "--weights", "random", "--trainable", "all", "--members", "2"]
        + ["--spam", str(spam), "--ham", str(ham), "--max-length", "32", "--epochs", "1"]
        + ["--device", "cpu", "--no-progress", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "member 2 of 2 (seed 1123)" in result.output
    assert "(one per member)" in result.output
    assert json.loads((out / "spamfilter.json").read_text())["recipe"]["members"] == 2


@pytest.mark.parametrize("members", [0, 9])
def test_the_library_refuses_members_out_of_range_before_training(
    members: int, splits: Splits, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="--members"):
        fine_tune(_options(tmp_path, members), splits=splits, data_origin="mail: test")
    assert not (tmp_path / f"model-{members}").exists()  # nothing written
