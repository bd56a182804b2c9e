"""Loading GPT-2 weights: parity with transformers' GPT-2 on the same checkpoints."""

from __future__ import annotations

import importlib
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import write_hf_checkpoint
from safetensors.torch import save_file

from spamfilter.errors import TrainingError
from spamfilter.finetune import build_classifier
from spamfilter.model import GPT2_SIZES, GPTConfig
from spamfilter.weights import WeightsError, load_pretrained


def _logits_match(ours, theirs, vocab=50257, seq=17):
    ids = torch.randint(0, vocab, (3, seq), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(ids).logits
        actual = ours(ids)
    assert actual.shape == (3, seq, vocab)
    return (actual - expected).abs().max().item()


@pytest.mark.parametrize("layout", ["save_pretrained", "hub"])
@pytest.mark.parametrize(
    "shape", [dict(n_embd=32, n_layer=2, n_head=2), dict(n_embd=64, n_layer=3, n_head=4)]
)
def test_local_folder_matches_transformers(tmp_path: Path, layout: str, shape: dict) -> None:
    reference = write_hf_checkpoint(tmp_path / "ckpt", layout=layout, **shape)
    model = load_pretrained(tmp_path / "ckpt")
    assert model.config.n_layer == shape["n_layer"]
    assert _logits_match(model, reference) <= 1e-4


def test_gpt2_small_shape_matches_transformers(tmp_path: Path) -> None:
    reference = write_hf_checkpoint(
        tmp_path / "small", layout="hub", n_embd=768, n_layer=12, n_head=12, n_positions=1024
    )
    model = load_pretrained(tmp_path / "small")
    assert model.config == GPTConfig()  # exactly gpt2-small's configuration
    assert _logits_match(model, reference, seq=12) <= 1e-4


def test_bare_safetensors_file_infers_config(tmp_path: Path) -> None:
    # Width 768 tells 12 heads; layers and context come from the tensors.
    reference = write_hf_checkpoint(tmp_path / "c", layout="hub", n_embd=768, n_layer=1, n_head=12)
    (tmp_path / "c" / "config.json").unlink()
    model = load_pretrained(tmp_path / "c" / "model.safetensors")
    assert (model.config.n_layer, model.config.n_head, model.config.n_positions) == (1, 12, 128)
    assert _logits_match(model, reference, seq=5) <= 1e-4


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    write_hf_checkpoint(tmp_path / "c", layout="hub")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config["n_embd"] = 48
    config["n_head"] = 2
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"wte.weight has shape|shape"):
        load_pretrained(tmp_path / "c")


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    write_hf_checkpoint(tmp_path / "c", layout="hub")
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "c" / "model.safetensors"))
    del tensors["h.1.mlp.c_fc.weight"]
    save_file(tensors, str(tmp_path / "c" / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"missing h\.1\.mlp\.c_fc\.weight"):
        load_pretrained(tmp_path / "c")


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    write_hf_checkpoint(tmp_path / "c", layout="hub")
    path = tmp_path / "c" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_pretrained(tmp_path / "c")


def test_download_failure_names_source_and_local_option(monkeypatch: pytest.MonkeyPatch) -> None:
    # No network here: with HF_HUB_OFFLINE the real download code fails as it would offline.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import importlib

    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)
    try:
        with pytest.raises(WeightsError) as info:
            load_pretrained("gpt2-medium", progress=False)
    finally:
        monkeypatch.delenv("HF_HUB_OFFLINE")
        importlib.reload(huggingface_hub.constants)
    message = str(info.value)
    assert "openai-community/gpt2-medium" in message and "--weights" in message


def test_unknown_source() -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_pretrained("gpt3-huge")


@pytest.fixture
def unreachable_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """huggingface_hub as without network: HF_HUB_OFFLINE unset, the hub at a closed port of the
    loopback (connections refused, as a machine without network refuses them), an empty cache."""
    import huggingface_hub.constants

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends
    cache = tmp_path / "hub-cache"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    importlib.reload(huggingface_hub.constants)
    try:
        yield cache
    finally:
        monkeypatch.undo()
        importlib.reload(huggingface_hub.constants)


def test_without_network_the_download_fails_at_once_in_one_line(
    unreachable_hub: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # The real download code with HF_HUB_OFFLINE unset: no retries (they took 27 s), nothing on stderr.
    with pytest.raises(WeightsError) as info:
        load_pretrained("gpt2-small", progress=False)
    message = str(info.value)
    assert "\n" not in message and "openai-community/gpt2" in message
    for way_out in ("--weights DIR", "--weights FILE.safetensors", "--weights random", "HF_HUB_OFFLINE"):
        assert way_out in message
    assert capfd.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_without_network_the_hub_cache_is_used(unreachable_hub: Path) -> None:
    repo = unreachable_hub / "models--openai-community--gpt2"
    write_hf_checkpoint(repo / "snapshots" / ("0" * 40), layout="hub")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    model = load_pretrained("gpt2-small", progress=False)
    assert (model.config.n_layer, model.config.n_embd) == (2, 32)


def test_architecture_name_is_a_gpt2_size_only_for_its_exact_configuration() -> None:
    from transformers import GPT2Config

    from spamfilter.finetune import architecture_name  # new with the manifest fix

    for name, config in GPT2_SIZES.items():
        assert architecture_name(config) == name
    # The hub's gpt2 config.json (transformers' defaults) is gpt2-small.
    assert architecture_name(GPTConfig.from_dict(GPT2Config().to_dict())) == "gpt2-small"
    assert architecture_name(GPTConfig(n_embd=128, n_layer=2, n_head=2, n_positions=256)) == "custom"
    assert architecture_name(GPTConfig(n_positions=512)) == "custom"  # gpt2-small, shorter context


def test_weights_folder_gives_the_shape_and_a_different_model_is_an_error(tmp_path: Path) -> None:
    write_hf_checkpoint(tmp_path / "c", layout="hub", n_embd=32, n_layer=2, n_head=2)
    classifier, origin = build_classifier(None, str(tmp_path / "c"), "last", 123)
    assert (classifier.gpt.config.n_layer, classifier.gpt.config.n_embd) == (2, 32)
    assert origin == str(tmp_path / "c")
    same, _ = build_classifier(str(tmp_path / "c" / "config.json"), str(tmp_path / "c"), "last", 123)
    assert same.gpt.config == classifier.gpt.config
    mismatch = r"--model gpt2-small \(12 layers.*does not match --weights"
    with pytest.raises(TrainingError, match=mismatch) as info:
        build_classifier("gpt2-small", str(tmp_path / "c"), "last", 123)
    assert "2 layers, 32 dims, 2 heads" in str(info.value)
