"""Loading GPT-2 weights: parity with transformers' GPT-2 on the same checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_hf_checkpoint
from safetensors.torch import save_file

from spamfilter.model import GPTConfig
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
