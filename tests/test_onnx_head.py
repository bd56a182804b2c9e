"""The head inside the ONNX files (spamfilter/onnx_head.py): the export's ``features`` output, the
head kept fp32 in the int8 variant, replaced in place without torch, and ``learn`` never importing
torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from spamfilter.export import reexport, write_model_directory
from spamfilter.head import Head, head_logits
from spamfilter.learn import current_head, pooled_features, write_features
from spamfilter.model import GPT, GPTConfig, SpamClassifier, add_classification_head
from spamfilter.modeldir import open_model_directory
from spamfilter.onnx_head import FEATURES_OUTPUT, read_head, replace_head, with_features_output
from spamfilter.tokenizer import PAD_TOKEN_ID

LENGTH = 24


def _ids(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, PAD_TOKEN_ID, size=(n, LENGTH), dtype=np.int64)
    for i in range(n):
        ids[i, 2 + (i * 7) % (LENGTH - 2) :] = PAD_TOKEN_ID
    return ids


@pytest.fixture()
def exported(tmp_path: Path) -> tuple[SpamClassifier, Path]:
    torch.manual_seed(0)
    gpt = add_classification_head(GPT(GPTConfig(n_embd=32, n_layer=2, n_head=2, n_positions=64)))
    classifier = SpamClassifier(gpt, "last-token").eval()
    out = tmp_path / "model"
    write_model_directory(
        out,
        classifier,
        max_length=LENGTH,
        test_ids=_ids(16),
        test_labels=np.array([0, 1] * 8),
        quantize="int8",
        manifest={"base_model": {"weights": "random", "config": gpt.config.to_dict()}, "threshold": 0.5},
    )
    return classifier, out


def _files(model: Path) -> list[Path]:
    manifest = open_model_directory(model).manifest
    return [model / manifest.onnx.file, *(model / v.file for v in manifest.variants.values())]


def _run(model: bytes | Path, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    logits, features = session.run(["logits", FEATURES_OUTPUT], {"input_ids": ids})
    return logits, features


def test_every_file_outputs_the_features_its_head_reads(exported: tuple[SpamClassifier, Path]) -> None:
    classifier, model = exported
    ids = _ids(6, seed=9)
    with torch.no_grad():
        expected = classifier.features(torch.as_tensor(ids)).numpy()
    for path in _files(model):
        logits, features = _run(path, ids)
        head = read_head(path.read_bytes())
        # The head is fp32 in every file, the int8 one included: the logits are the head of the features.
        np.testing.assert_allclose(head_logits(head, features), logits, atol=1e-5)
        if "int8" not in path.name:
            np.testing.assert_allclose(features, expected, atol=1e-4)
    weight = classifier.gpt.lm_head.weight.detach().numpy()
    assert np.array_equal(read_head(_files(model)[-1].read_bytes()).weight, weight)


def test_a_new_head_is_written_in_place_and_used(exported: tuple[SpamClassifier, Path]) -> None:
    _, model = exported
    ids = _ids(6, seed=11)
    rng = np.random.default_rng(1)
    new = Head(rng.normal(size=(2, 32)), rng.normal(size=2))
    for path in _files(model):
        raw = path.read_bytes()
        replaced = replace_head(raw, new)
        assert len(replaced) == len(raw)
        logits, features = _run(replaced, ids)
        _, features_before = _run(raw, ids)
        np.testing.assert_array_equal(features, features_before)  # the trunk is untouched
        np.testing.assert_allclose(logits, head_logits(new, features), atol=1e-5)
    with pytest.raises(Exception, match="does not fit"):
        replace_head(_files(model)[0].read_bytes(), Head(np.zeros((2, 8)), np.zeros(2)))


def test_an_export_without_features_gets_them_in_memory(exported: tuple[SpamClassifier, Path]) -> None:
    import onnx

    _, model = exported
    path = _files(model)[0]
    proto = onnx.load(str(path))
    kept = [output for output in proto.graph.output if output.name == "logits"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)  # as exports before the features output were
    old = proto.SerializeToString()
    ids = _ids(4)
    restored = with_features_output(old, 32)
    logits, features = _run(restored, ids)
    np.testing.assert_allclose(head_logits(read_head(old), features), logits, atol=1e-5)


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_learn_retrains_without_torch_and_torch_reexport_agrees(
    exported: tuple[SpamClassifier, Path], tmp_path: Path
) -> None:
    classifier, model = exported
    # The features learn reads, as training writes them, for a small labelled set.
    rng = np.random.default_rng(5)
    splits = {name: _ids(40, seed=seed) for name, seed in (("train", 1), ("validation", 2), ("test", 4))}
    features = {name: pooled_features(classifier, ids) for name, ids in splits.items()}
    labels = {name: rng.integers(0, 2, size=40) for name in splits}
    write_features(model, features, labels)
    (model / "corrections" / "spam").mkdir(parents=True)
    (model / "corrections" / "spam" / "a.eml").write_bytes(b"Subject: win money now\n\nclick here to win\n")
    script = BLOCK_TORCH + (
        "from pathlib import Path\n"
        "from spamfilter.learn import retrain, RetrainRefused\n"
        "try:\n"
        f"    print('kept', retrain(Path({str(model)!r})).after)\n"
        "except RetrainRefused as error:\n"
        "    print('refused', error)\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("kept"), run.stdout
    learnt = current_head(open_model_directory(model))
    assert not np.array_equal(learnt.weight, classifier.gpt.lm_head.weight.detach().numpy())
    ids = _ids(8, seed=21)
    before = {path.name: _run(path, ids)[0] for path in _files(model)}
    # torch's export of the checkpoint takes the learnt head: the same verdicts, within float tolerance.
    reexport(model)
    manifest = json.loads((model / "spamfilter.json").read_text())
    assert manifest["metrics"]["learnt"]["spam"] == 1
    after = _run(model / open_model_directory(model).manifest.onnx.file, ids)[0]
    np.testing.assert_allclose(after, next(iter(before.values())), atol=1e-4)
