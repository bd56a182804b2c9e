"""ONNX export and the model directory: parity with torch, completeness, integrity checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spamfilter.cli import cli
from spamfilter.export import ExportError, load_checkpoint, write_model_directory
from spamfilter.model import GPT, GPTConfig, SpamClassifier, add_classification_head
from spamfilter.modeldir import ModelDirectoryError, open_model_directory
from spamfilter.runtime import Classifier
from spamfilter.tokenizer import PAD_TOKEN_ID

EXPECTED_FILES = {"model.onnx", "spamfilter.json", "encoder.json", "vocab.bpe", "model.pt"}


def _samples(n: int, length: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, PAD_TOKEN_ID, size=(n, length), dtype=np.int64)
    for i in range(n):
        ids[i, 1 + i * length // n :] = PAD_TOKEN_ID
    return ids


def _export(tmp_path: Path, pooling: str = "last", length: int = 24) -> tuple[SpamClassifier, Path]:
    torch.manual_seed(0)
    classifier = SpamClassifier(add_classification_head(GPT(GPTConfig(n_embd=32, n_layer=2, n_head=2,
                                                                       n_positions=64))), pooling).eval()
    out = tmp_path / "model"
    write_model_directory(out, classifier, max_length=length, sample_ids=_samples(8, length),
                          manifest={"base_model": {"weights": "random"}})
    return classifier, out


@pytest.mark.parametrize("pooling", ["last", "last-token"])
def test_export_writes_a_complete_directory_that_agrees_with_torch(tmp_path: Path, pooling: str) -> None:
    classifier, out = _export(tmp_path, pooling)
    assert EXPECTED_FILES <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "spamfilter.json").read_text())
    assert manifest["labels"] == ["not spam", "spam"]
    assert (manifest["max_length"], manifest["pad_token_id"], manifest["pooling"]) == (24, PAD_TOKEN_ID, pooling)
    assert manifest["onnx"]["parity_max_abs_diff"] <= 1e-4
    directory = open_model_directory(out)
    import onnxruntime as ort

    session = ort.InferenceSession(str(directory.onnx_path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [("input_ids", "tensor(int64)", ["batch", 24])]
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [("logits", "tensor(float)", ["batch", 2])]
    ids = _samples(5, 24)[::-1].copy()
    with torch.no_grad():
        expected = classifier(torch.as_tensor(ids)).numpy()
    np.testing.assert_allclose(session.run(["logits"], {"input_ids": ids})[0], expected, atol=1e-4)


def test_checkpoint_loads_with_weights_only_and_reexports(tmp_path: Path) -> None:
    classifier, out = _export(tmp_path)
    loaded, data = load_checkpoint(out / "model.pt")
    ids = torch.as_tensor(_samples(3, 24))
    with torch.no_grad():
        assert torch.equal(loaded(ids), classifier(ids))
    assert data["max_length"] == 24
    result = CliRunner().invoke(cli, ["export", str(out / "model.pt"), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "again" / "spamfilter.json").read_text())["base_model"] == {"weights": "random"}
    assert EXPECTED_FILES <= {p.name for p in (tmp_path / "again").iterdir()}


def test_parity_failure_is_loud_and_keeps_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Make torch's answer differ from the exported graph: the export must refuse.
    import spamfilter.export as export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="disagree"):
        _export(tmp_path)
    assert not (tmp_path / "model" / "model.onnx").exists()


def test_truncated_onnx_file_is_caught_by_sha256(tmp_path: Path) -> None:
    _, out = _export(tmp_path)
    onnx = out / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:2000])
    with pytest.raises(ModelDirectoryError, match="does not match the sha256"):
        open_model_directory(out)


def test_unloadable_onnx_file_is_one_clear_error(tmp_path: Path) -> None:
    _, out = _export(tmp_path)
    (out / "model.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(ModelDirectoryError, match="onnxruntime cannot load"):
        Classifier(open_model_directory(out, verify_sha256=False))


@pytest.mark.parametrize("missing", ["vocab.bpe", "model.onnx", "spamfilter.json"])
def test_missing_file_is_named_with_its_path(tmp_path: Path, missing: str) -> None:
    _, out = _export(tmp_path)
    (out / missing).unlink()
    with pytest.raises(ModelDirectoryError, match=str(out / missing).replace(".", r"\.")):
        open_model_directory(out)


def test_bad_checkpoint_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x04not a checkpoint")
    result = CliRunner().invoke(cli, ["export", str(bad)])
    assert result.exit_code == 1
    assert "is not a spamfilter checkpoint" in result.output and "Traceback" not in result.output
