"""ONNX export and the model directory: parity with torch, completeness, integrity checks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spamfilter.cli import cli
from spamfilter.export import ExportError, load_checkpoint, write_model_directory
from spamfilter.model import GPT, POOLINGS, GPTConfig, SpamClassifier, add_classification_head
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


def _export(
    tmp_path: Path,
    pooling: str = "last",
    length: int = 24,
    quantize: str | None = None,
    attention_window: int | None = None,
) -> tuple[SpamClassifier, Path]:
    torch.manual_seed(0)
    shape = GPTConfig(n_embd=32, n_layer=2, n_head=2, n_positions=64, attention_window=attention_window)
    classifier = SpamClassifier(add_classification_head(GPT(shape)), pooling).eval()
    out = tmp_path / "model"
    write_model_directory(
        out,
        classifier,
        max_length=length,
        test_ids=_samples(8, length),
        test_labels=np.array([0, 1] * 4),
        quantize=quantize,
        manifest={"base_model": {"weights": "random"}},
    )
    return classifier, out


@pytest.mark.parametrize("pooling", POOLINGS)
def test_export_writes_a_complete_directory_that_agrees_with_torch(tmp_path: Path, pooling: str) -> None:
    classifier, out = _export(tmp_path, pooling)
    assert {p.name for p in out.iterdir()} >= EXPECTED_FILES
    manifest = json.loads((out / "spamfilter.json").read_text())
    assert manifest["labels"] == ["not spam", "spam"]
    assert (manifest["max_length"], manifest["pad_token_id"], manifest["pooling"]) == (
        24,
        PAD_TOKEN_ID,
        pooling,
    )
    assert manifest["onnx"]["parity_max_abs_diff"] <= 1e-4
    directory = open_model_directory(out)
    import onnxruntime as ort

    session = ort.InferenceSession(str(directory.onnx_path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        ("input_ids", "tensor(int64)", ["batch", 24])
    ]
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()][:2] == [
        ("logits", "tensor(float)", ["batch", 2]),
        ("features", "tensor(float)", ["batch", 32]),  # what the head reads (learn, user heads)
    ]
    ids = _samples(5, 24)[::-1].copy()
    with torch.no_grad():
        expected = classifier(torch.as_tensor(ids)).numpy()
        read = classifier.read_features(torch.as_tensor(ids)).numpy()
    np.testing.assert_allclose(session.run(["logits"], {"input_ids": ids})[0], expected, atol=1e-4)
    # line-ends: every position read too, so that another head (a user's) chooses for itself
    names = [o.name for o in session.get_outputs()]
    assert names[2:] == (["read_features"] if pooling == "line-ends" else [])
    if pooling == "line-ends":
        np.testing.assert_allclose(session.run(["read_features"], {"input_ids": ids})[0], read, atol=1e-4)


def test_checkpoint_loads_with_weights_only_and_reexports(tmp_path: Path) -> None:
    classifier, out = _export(tmp_path)
    loaded, data = load_checkpoint(out / "model.pt")
    ids = torch.as_tensor(_samples(3, 24))
    with torch.no_grad():
        assert torch.equal(loaded(ids), classifier(ids))
    assert data["max_length"] == 24
    result = CliRunner().invoke(cli, ["export", str(out / "model.pt"), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "again" / "spamfilter.json").read_text())["base_model"] == {
        "weights": "random"
    }
    assert {p.name for p in (tmp_path / "again").iterdir()} >= EXPECTED_FILES
    assert not (tmp_path / "again" / "memory.npz").exists()  # the source kept no memory of its mail
    # A model that keeps a memory of its training mail (train --remember-training) takes it along:
    # its threshold was chosen on the scores the memory gives.
    from spamfilter.memory import Memory, read_memory, write_memory

    write_memory(out, Memory().with_entry("train-0", 1, "one two three four five six seven " * 4, 0.0))
    result = CliRunner().invoke(cli, ["export", str(out / "model.pt"), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert read_memory(tmp_path / "again").keys == ("train-0",)


def test_failed_export_leaves_a_working_directory_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = _export(tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import spamfilter.export as export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # torch and the new graph now "disagree"
    with pytest.raises(ExportError, match="disagree"):
        _export(tmp_path, pooling="last-token")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced, nothing left behind
    open_model_directory(out)


def test_a_model_with_nan_weights_is_not_exported(tmp_path: Path) -> None:
    """A diverged run (train --weight-decay inf gave loss nan) has NaN logits in torch and in
    onnxruntime; NaN compares false with the tolerance, so the parity check must refuse it itself."""
    torch.manual_seed(0)
    shape = GPTConfig(n_embd=32, n_layer=2, n_head=2, n_positions=64)
    classifier = SpamClassifier(add_classification_head(GPT(shape)), "last").eval()
    with torch.no_grad():
        for parameter in classifier.parameters():
            parameter.fill_(float("nan"))
    out = tmp_path / "model"
    with pytest.raises(ExportError, match="non-finite logits"):
        write_model_directory(
            out,
            classifier,
            max_length=24,
            test_ids=_samples(8, 24),
            test_labels=np.array([0, 1] * 4),
            manifest={"base_model": {"weights": "random"}},
        )
    assert not (out / "spamfilter.json").exists()


def test_truncated_onnx_file_is_caught_by_sha256(tmp_path: Path) -> None:
    _, out = _export(tmp_path)
    onnx = out / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:2000])
    with pytest.raises(ModelDirectoryError, match="does not match the sha256"):
        Classifier.load(out, variant="fp32")


def test_unloadable_onnx_file_is_one_clear_error(tmp_path: Path) -> None:
    _, out = _export(tmp_path)
    (out / "model.onnx").write_bytes(b"not onnx at all")
    manifest = json.loads((out / "spamfilter.json").read_text())
    manifest["onnx"]["sha256"] = hashlib.sha256(b"not onnx at all").hexdigest()  # intact, yet not ONNX
    (out / "spamfilter.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirectoryError, match="onnxruntime cannot load"):
        Classifier.load(out)


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


@pytest.mark.parametrize("pooling", POOLINGS)
def test_an_attention_window_is_exported_and_reloaded(tmp_path: Path, pooling: str) -> None:
    """The window and the Subject it keeps in sight are computed by the graph itself: the ONNX
    model (and the dynamic-length one) answers as torch does, and the checkpoint keeps the window."""
    classifier, out = _export(tmp_path, pooling, attention_window=3)
    ids = _samples(6, 24)
    ids[:, 2] = 198  # a first line of 3 tokens: seen from every position
    ids[1, 2], ids[1, 9] = 7, 628  # a longer one
    ids[2:, 11] = 198  # line ends to read
    with torch.no_grad():
        expected = torch.softmax(classifier(torch.as_tensor(ids)), dim=-1)[:, 1].numpy()
    import onnxruntime as ort

    directory = open_model_directory(out)
    for path in {directory.onnx_path, directory.variant_file("fp32")[0]}:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], {"input_ids": ids})[0]
        np.testing.assert_allclose(
            torch.softmax(torch.as_tensor(logits), -1)[:, 1].numpy(), expected, atol=1e-5
        )
    loaded, _ = load_checkpoint(out / "model.pt")
    assert loaded.gpt.config.attention_window == 3
    with torch.no_grad():
        assert torch.equal(loaded(torch.as_tensor(ids)), classifier(torch.as_tensor(ids)))
    full = SpamClassifier(
        add_classification_head(GPT(replace(classifier.gpt.config, attention_window=None))), pooling
    )
    full.load_state_dict(classifier.state_dict())
    with torch.no_grad():  # the samples are long enough that the window changes the answers
        assert not torch.allclose(full.eval()(torch.as_tensor(ids)), classifier(torch.as_tensor(ids)))


def test_last_token_pooling_adds_a_dynamic_length_model_with_identical_answers(tmp_path: Path) -> None:
    classifier, out = _export(tmp_path, "last-token")
    directory = open_model_directory(out)
    assert directory.variant_file("fp32")[0].name == "model.dynamic.onnx"
    texts = ["short", "a somewhat longer message with more tokens in it", "WIN WIN WIN " * 30, ""]
    dynamic = Classifier(directory).spam_probability(texts)
    fixed_only = json.loads((out / "spamfilter.json").read_text())
    fixed_only["variants"].pop("fp32-dynamic")
    (out / "spamfilter.json").write_text(json.dumps(fixed_only))
    fixed_classifier = Classifier(open_model_directory(out))
    assert not fixed_classifier.dynamic_length
    np.testing.assert_allclose(dynamic, fixed_classifier.spam_probability(texts), atol=1e-6)
    rows = fixed_classifier.tokenizer.pad(fixed_classifier.tokenizer.encode_batch(texts), 24)
    with torch.no_grad():
        expected = torch.softmax(classifier(torch.as_tensor(rows)), dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(dynamic, expected, atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_int8_variant_is_recorded_with_its_agreement(tmp_path: Path, pooling: str) -> None:
    classifier, out = _export(tmp_path, pooling, quantize="int8")
    manifest = json.loads((out / "spamfilter.json").read_text())
    int8 = manifest["variants"]["int8"]
    # The recorded figures are recomputed from torch (fp32) and the int8 file on the same inputs.
    from spamfilter.export import INT8_SCHEME, onnx_probabilities
    from spamfilter.runtime import cpu_instruction_set

    ids, labels = _samples(8, 24), np.array([0, 1] * 4)
    with torch.no_grad():
        fp32 = torch.softmax(classifier(torch.as_tensor(ids)), dim=-1)[:, 1].double().numpy()
    quantized = onnx_probabilities(out / "model.int8.onnx", ids)
    # A statement about the model, whatever CPU runs it: 7-bit weights and 8-bit activations
    # move this model's P(spam) by about 0.01 (0.06-0.13 with full-range weights that saturate on AVX2).
    assert np.abs(quantized - fp32).max() < 0.03
    assert int8["agreement_with_fp32"] == pytest.approx(np.mean((fp32 >= 0.5) == (quantized >= 0.5)))
    assert int8["accuracy"] == pytest.approx(np.mean((quantized >= 0.5) == (labels == 1)))
    assert int8["max_abs_probability_diff"] == pytest.approx(np.abs(quantized - fp32).max(), abs=1e-6)
    assert int8["quantization"] == INT8_SCHEME and int8["measured_on"] == cpu_instruction_set()
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    classifier = Classifier.load(out, variant="int8")
    assert classifier.variant == "int8"
    assert classifier.spam_probability(["hello there"]).shape == (1,)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_int8_model_computes_the_same_on_every_cpu(tmp_path: Path, pooling: str) -> None:
    """onnxruntime's int8 kernels differ by CPU (VPMADDUBSW saturates its int16 pair sums on AVX2
    without VNNI). ONNX's reference evaluator computes the same int8 graph in plain numpy integer
    arithmetic, the same on every machine: onnxruntime must give its answer here, whatever this CPU is."""
    import onnx
    from onnx import version_converter
    from onnx.reference import ReferenceEvaluator

    from spamfilter.runtime import create_session, softmax_spam

    _, out = _export(tmp_path, pooling, quantize="int8")
    int8_file = out / "model.int8.onnx"
    ids = _samples(16, 24)  # one batch: activations are scaled per batch, so both must see the same one
    fast = softmax_spam(create_session(int8_file).run(["logits"], {"input_ids": ids})[0].astype(np.float64))
    graph = version_converter.convert_version(onnx.load(str(int8_file)), 21)  # its DequantizeLinear
    exact = softmax_spam(ReferenceEvaluator(graph).run(["logits"], {"input_ids": ids})[0].astype(np.float64))
    assert np.abs(fast - exact).max() < 1e-3  # 3e-8 measured; saturation moved it by 0.03-0.06


@pytest.mark.parametrize("window", [None, 3])
def test_the_int8_graph_quantizes_every_projection_and_needs_no_nan_pass(
    tmp_path: Path, window: int | None
) -> None:
    """What the filter's time goes on: every Linear but the head runs as an int8 MatMul (the
    last block's keys and values once ran in fp32 from a slice of c_attn's weight), and the masked
    attention has no NaN pass (SDPA's export of a boolean mask adds one over every score)."""
    import onnx

    classifier, out = _export(tmp_path, "line-ends", quantize="int8", attention_window=window)
    fp32 = onnx.load(str(out / "model.onnx")).graph
    assert not [node.name for node in fp32.node if node.op_type == "IsNaN"]
    int8 = onnx.load(str(out / "model.int8.onnx")).graph
    shapes = {t.name: tuple(t.dims) for t in int8.initializer}
    quantized = [node for node in int8.node if node.op_type in ("DynamicQuantizeMatMul", "MatMulInteger")]
    # the weights multiplied in int8, (in, out): exactly the blocks' four projections each
    c = classifier.gpt.config.n_embd
    expected = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)] * len(classifier.gpt.h)
    assert sorted(shapes[node.input[1]] for node in quantized) == sorted(expected)
    # the head (read twice with line-ends: to choose the line end, then for the logits) stays fp32
    heads = [node for node in int8.node if any(shapes.get(name) in ((c, 2), (2, c)) for name in node.input)]
    assert len(heads) == 2
    assert {node.op_type for node in heads} <= {"MatMul", "Gemm"}


def test_missing_int8_variant_says_how_to_make_it(tmp_path: Path) -> None:
    _, out = _export(tmp_path)
    with pytest.raises(ModelDirectoryError, match="--quantize int8"):
        Classifier.load(out, variant="int8")
