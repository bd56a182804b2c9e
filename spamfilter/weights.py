"""Pretrained GPT-2 weights: download from the Hugging Face hub or read local safetensors files.

Two key layouts exist in the wild and both are accepted: the hub's ``openai-community/gpt2*``
files (keys without a prefix, plus ``h.N.attn.bias`` causal-mask buffers, no ``lm_head``) and
``transformers``' ``save_pretrained`` output (``transformer.``-prefixed keys). Conv1D weights are
stored ``[in, out]`` and are transposed into ``nn.Linear``'s ``[out, in]``. Every shape is checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .errors import WeightsError, first_line
from .model import GPT, GPT2_SIZES, GPTConfig
from .modeldir import sha256_file

HUB_REPOS = {
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HUB_PROBE_TIMEOUT = 10.0  # seconds for one request that tells whether the hub can be reached at all
LOCAL_WEIGHTS_HINT = (
    f"pass local weights with --weights DIR (holding {CONFIG_FILE} and {WEIGHTS_FILE}) or "
    "--weights FILE.safetensors, or train from scratch with --weights random"
)

_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not parameters
_HEADS_BY_WIDTH = {config.n_embd: config.n_head for config in GPT2_SIZES.values()}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def load_pretrained(source: str | Path, *, progress: bool = True) -> GPT:
    """GPT-2 language model from a size name, a local Hugging Face–style folder or a safetensors file.

    ``source`` is ``gpt2-small`` | ``gpt2-medium`` | ``gpt2-large`` | ``gpt2-xl`` (downloaded from the
    hub and cached), a folder with ``config.json`` + ``model.safetensors``, or a ``.safetensors``
    file. The returned model's ``forward(input_ids)`` gives next-token logits ``(B, T, 50257)``.
    """
    weights_path, config_path = resolve_source(source, progress=progress)
    tensors = read_safetensors(weights_path)
    if config_path is not None:
        try:
            config = GPTConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:  # bad JSON, or values no GPT-2 can have
            raise WeightsError(f"{config_path} is not a usable GPT-2 config.json: {error}") from None
    else:
        config = infer_config(tensors, str(weights_path))
    model = GPT(config)
    copy_weights(model, tensors, str(weights_path))
    return model.eval()


def resolve_source(source: str | Path, *, progress: bool = True) -> tuple[Path, Path | None]:
    """(weights file, config file or None) for a size name, folder or file."""
    if str(source) in HUB_REPOS:
        return download(str(source), progress=progress)
    path = Path(source)
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise WeightsError(f"{weights} not found: a weights folder needs {WEIGHTS_FILE}")
        config = path / CONFIG_FILE
        return weights, config if config.is_file() else None
    if path.is_file():
        config = path.parent / CONFIG_FILE
        return path, config if config.is_file() else None
    names = ", ".join(HUB_REPOS)
    raise WeightsError(f"weights {source!s} not found: give one of {names}, a folder or a .safetensors file")


def download(size: str, *, progress: bool = True) -> tuple[Path, Path]:
    """Download (or find in the Hugging Face cache) the hub's safetensors weights and config.

    Without network ``huggingface_hub`` retries each request for half a minute, a warning per
    try; so one request first tells whether the hub answers at all. If it does not, the cache is
    the only source, and a miss is one :class:`WeightsError` at once. ``HF_HUB_OFFLINE=1`` skips
    that request (the hub library then reads only its cache).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    repo = HUB_REPOS[size]
    if not constants.HF_HUB_OFFLINE:
        unreachable = _hub_unreachable(repo)
        if unreachable is not None:
            cached = _cached_download(repo)
            if cached is not None:
                return cached
            raise WeightsError(
                f"cannot download {size} ({constants.ENDPOINT}/{repo}): no network? the hub cannot "
                f"be reached ({unreachable}) and the Hugging Face cache has no copy; {LOCAL_WEIGHTS_HINT} "
                "(HF_HUB_OFFLINE=1 reads only the cache, without trying the network)"
            )
    if not progress:
        disable_progress_bars()
    try:
        config = Path(hf_hub_download(repo, CONFIG_FILE))
        weights = Path(hf_hub_download(repo, WEIGHTS_FILE))
    except Exception as error:  # offline, HTTP errors, disk errors: one actionable message
        raise WeightsError(
            f"could not download {size} from {constants.ENDPOINT}/{repo} ({first_line(error)}); "
            f"without network {LOCAL_WEIGHTS_HINT}"
        ) from None
    finally:
        enable_progress_bars()
    verify_hub_blob(weights)
    return weights, config


def _hub_unreachable(repo: str) -> str | None:
    """Why the hub cannot be reached (one request, no retries, a short timeout), or None if it answers.

    Any HTTP answer, an error status included, means there is network: the download itself then
    runs as usual. The request goes through ``huggingface_hub``'s own session (its proxies and
    certificates) to the URL the download starts with (``HF_ENDPOINT`` included).
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import get_session

    try:
        get_session().head(hf_hub_url(repo, CONFIG_FILE), timeout=HUB_PROBE_TIMEOUT)
    except Exception as error:  # DNS, refused, timeout, TLS: the client library's many types
        return first_line(error)
    return None


def _cached_download(repo: str) -> tuple[Path, Path] | None:
    """The weights and config of ``repo`` from the Hugging Face cache, without the network."""
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(repo, CONFIG_FILE, local_files_only=True))
        weights = Path(hf_hub_download(repo, WEIGHTS_FILE, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or an unreadable cache
        return None
    verify_hub_blob(weights)
    return weights, config


def verify_hub_blob(path: Path) -> None:
    """Check a cached hub file against its sha256.

    The hub cache stores a large (LFS) file under ``blobs/<sha256 of its content>``, the hash the
    hub announced for it, so a truncated or corrupted cache entry is caught here.
    """
    expected = path.resolve().name
    if not _SHA256.fullmatch(expected):
        return
    if sha256_file(path) != expected:
        raise WeightsError(
            f"{path} does not match its sha256 {expected}: delete it from the Hugging Face cache "
            "and download again"
        )


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file: {error}") from None


def normalise_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hub and ``save_pretrained`` layouts -> our names, with mask buffers and tied head dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        name = key.removeprefix("transformer.")
        if name.endswith(_IGNORED_SUFFIXES) or name == "lm_head.weight":
            continue
        out[name] = tensor
    return out


def infer_config(tensors: dict[str, torch.Tensor], origin: str) -> GPTConfig:
    """GPT-2 configuration from tensor shapes, for a bare safetensors file without config.json."""
    named = normalise_keys(tensors)
    try:
        vocab_size, n_embd = named["wte.weight"].shape
        n_positions = named["wpe.weight"].shape[0]
    except KeyError as missing:
        raise WeightsError(f"{origin} is not a GPT-2 checkpoint: no {missing.args[0]}") from None
    layers = {int(m.group(1)) for k in named if (m := re.match(r"h\.(\d+)\.", k))}
    if n_embd not in _HEADS_BY_WIDTH:
        raise WeightsError(f"{origin}: cannot tell the number of heads for width {n_embd}; add config.json")
    return GPTConfig(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=len(layers),
        n_head=_HEADS_BY_WIDTH[n_embd],
    )


def copy_weights(model: GPT, tensors: dict[str, torch.Tensor], origin: str) -> None:
    """Copy checkpoint tensors into ``model``, transposing Conv1D weights and checking every shape."""
    named = normalise_keys(tensors)
    targets = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    missing = sorted(set(targets) - set(named))
    unexpected = sorted(set(named) - set(targets))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (" …" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}" + (" …" if len(unexpected) > 3 else ""))
        raise WeightsError(f"{origin} does not fit this GPT-2 configuration: {'; '.join(parts)}")
    with torch.no_grad():
        for name, target in targets.items():
            source = named[name]
            if name.endswith(_CONV1D_WEIGHTS):
                source = source.t()
            if tuple(source.shape) != tuple(target.shape):
                raise WeightsError(
                    f"{origin}: {name} has shape {tuple(source.shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(source.to(target.dtype))
