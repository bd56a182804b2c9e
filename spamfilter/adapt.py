"""Adapting GPT-2 to a user's own mail before the classifier is fine-tuned: next-token pretraining.

Labels are not used: any mail the user has (spam and ham folders, an archive of years) teaches the
trunk the language of that mail. The loop is GPT-2's pretraining loop: the texts the filter sees
(:func:`spamfilter.labelled.read_mail_texts`, the reader ``train`` uses, bounded and safe on
hostile mail) are tokenised and joined into one stream, each message ended by ``<|endoftext|>``
(the token the classifier pads with); each step reads ``batch_size`` windows of ``context + 1``
tokens at random offsets and minimises the cross-entropy of every next token, through the output
head tied to the token embedding. A share of the messages is held out and its language-model loss
measured before and after, so a run says whether it learnt anything that generalises.

The result is a Hugging Face-format checkpoint (``config.json`` + ``model.safetensors``, the
layout :mod:`spamfilter.weights` reads), so ``spamfilter train --weights DIR`` fine-tunes from it,
plus ``adapt.json`` (losses, held-out loss before and after, steps, time). The state after every
``save_every`` steps is kept in ``adapt-state.pt`` (written atomically; read with
``weights_only=True``): a run that was interrupted, even killed, continues from there with
``resume``, and ends exactly as the uninterrupted run would (the batches come from a saved
generator state, the learning rate from the step number).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import TrainingError, UsageError
from .interrupts import Interrupted, requested
from .labelled import read_mail_texts
from .model import GPT, set_attention_window
from .tokenizer import PAD_TOKEN_ID, Tokenizer
from .train_options import DEFAULT_MODEL, RANDOM_WEIGHTS
from .train_options import AdaptOptions as AdaptOptions  # torch-free there: the command line reads it
from .weights import CONFIG_FILE, WEIGHTS_FILE

STATE_FILE = "adapt-state.pt"  # in the output folder while a run is unfinished
RECORD_FILE = "adapt.json"
END_OF_TEXT = PAD_TOKEN_ID  # ends each message in the stream: the classifier pads with it
# A newsletter of 50,000 tokens would otherwise outweigh hundreds of short messages; the filter
# itself reads at most a few windows of a message.
MAX_MESSAGE_TOKENS = 1024
# Hugging Face's GPT-2 keeps these as Conv1D, [in, out]; ours are nn.Linear, [out, in].
_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

StepCallback = Callable[[int, int, float], None]  # (step, total steps, training loss)
EvalCallback = Callable[[int, float], None]  # (step, held-out loss)


@dataclass
class AdaptRecord:
    steps: int
    messages: int  # read and used (training + held out)
    held_out_messages: int
    training_tokens: int
    held_out_tokens: int
    held_out_loss_before: float
    held_out_loss_after: float
    seconds: float  # of training, summed over resumed runs
    losses: list[float] = field(default_factory=list)  # training loss at every step
    held_out_losses: list[list[float]] = field(default_factory=list)  # [step, loss] pairs
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- the start weights


def start_model(model: str | None, weights: str | None, seed: int) -> tuple[GPT, str]:
    """The GPT-2 to adapt, as ``train`` builds its trunk, and where its weights came from."""
    from .finetune import architecture
    from .weights import HUB_REPOS, load_pretrained

    if weights == RANDOM_WEIGHTS:
        torch.manual_seed(seed)  # the same initial trunk ``train --weights random --seed`` builds
        return GPT(architecture(model or DEFAULT_MODEL)), RANDOM_WEIGHTS
    if weights is None:
        model = model or DEFAULT_MODEL
        if model not in HUB_REPOS:
            raise TrainingError(
                f"--model {model} has no hub weights: pass --weights PATH or --weights random"
            )
        return load_pretrained(model), model
    gpt = load_pretrained(weights)
    if model is not None and not gpt.config.same_shape(architecture(model)):
        raise TrainingError(f"--model {model} does not match the shape of --weights {weights}")
    return gpt, weights


# --------------------------------------------------------------------------- the data


@dataclass
class Streams:
    train: np.ndarray  # int64 token ids, messages joined, each ended by END_OF_TEXT
    held_out: np.ndarray
    messages: int
    held_out_messages: int
    sha256: str  # of both streams: a resumed run must read the same mail


def read_streams(
    sources: Sequence[Path],
    held_out: float,
    seed: int,
    context: int,
    warn: Callable[[str], None] | None = None,
) -> Streams:
    """The mail's texts, tokenised, split by message into a training and a held-out stream."""
    if not sources:
        raise UsageError("give at least one mail source to adapt on")
    texts = [text for text in read_mail_texts(list(sources), [], warn).texts if text.strip()]
    return streams_of(Tokenizer().encode_batch(texts), held_out, seed, context)


def streams_of(rows: Sequence[Sequence[int]], held_out: float, seed: int, context: int) -> Streams:
    """Messages' token ids (empty ones dropped), split by message into a training and a held-out
    stream."""
    rows = [row for row in rows if len(row)]
    if len(rows) < 2:
        raise UsageError(f"{len(rows)} readable messages: adapting needs at least 2 (one is held out)")
    order = np.random.default_rng(seed).permutation(len(rows))
    n_held = min(max(1, round(held_out * len(rows))), len(rows) - 1)

    def stream(indices: np.ndarray) -> np.ndarray:
        parts = [np.asarray([*rows[i][:MAX_MESSAGE_TOKENS], END_OF_TEXT], dtype=np.int64) for i in indices]
        return np.concatenate(parts)

    train, held = stream(np.sort(order[n_held:])), stream(np.sort(order[:n_held]))
    if len(train) < context + 1:
        raise UsageError(
            f"the mail holds {len(train)} training tokens, fewer than one window of {context + 1}: "
            "adapt on more mail or a shorter --context"
        )
    digest = hashlib.sha256(train.tobytes() + b"|" + held.tobytes()).hexdigest()
    return Streams(train, held, len(rows), n_held, digest)


def held_out_windows(stream: np.ndarray, context: int, limit: int) -> torch.Tensor:
    """Non-overlapping windows of ``context + 1`` tokens, at most ``limit`` evenly spread over the
    stream; a stream shorter than one window is one short window."""
    n = max(1, (len(stream) - 1) // context)
    starts = np.arange(n) * context
    if n > limit:
        starts = starts[np.linspace(0, n - 1, limit).round().astype(np.int64)]
    width = min(context + 1, len(stream))
    return torch.from_numpy(np.stack([stream[s : s + width] for s in starts]))


# --------------------------------------------------------------------------- the loop


def lm_loss(gpt: GPT, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each next token: windows (B, T + 1) -> scalar."""
    logits = gpt(windows[:, :-1])  # (B, T, vocab): the tied head
    return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())


def evaluate(gpt: GPT, windows: torch.Tensor, device: str, batch_size: int = 8) -> float:
    was_training = gpt.training
    gpt.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for begin in range(0, len(windows), batch_size):
            batch = windows[begin : begin + batch_size].to(device)
            total += float(lm_loss(gpt, batch)) * batch.numel()
            count += batch.numel()
    gpt.train(was_training)
    return total / count


def learning_rate(step: int, options: AdaptOptions) -> float:
    """Linear warm-up, then cosine decay to lr / 10 at the last step (a function of the step alone,
    so a resumed run follows the same schedule)."""
    if step < options.warmup:
        return options.lr * (step + 1) / options.warmup
    progress = (step - options.warmup) / max(1, options.steps - options.warmup)
    return options.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def sample_batch(stream: torch.Tensor, options: AdaptOptions, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` windows of ``context + 1`` tokens at random offsets of the stream."""
    starts = torch.randint(0, len(stream) - options.context, (options.batch_size,), generator=generator)
    offsets = torch.arange(options.context + 1)
    return stream[starts[:, None] + offsets]  # (B, context + 1)


def _fingerprint(options: AdaptOptions, origin: str, streams: Streams) -> dict[str, Any]:
    """What a saved state must match to be resumed (not ``save_every``, ``device`` or ``resume``)."""
    keep = ["model", "steps", "context", "batch_size", "lr", "weight_decay", "warmup", "held_out"]
    keep += ["held_out_windows", "seed"]
    if options.attention_window is not None:  # states saved before the option match as they were
        keep.append("attention_window")
    values = {name: getattr(options, name) for name in keep}
    return {**values, "weights": origin, "inputs_sha256": streams.sha256}


def adapt(
    options: AdaptOptions,
    on_step: StepCallback | None = None,
    on_eval: EvalCallback | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    rows: Sequence[Sequence[int]] | None = None,
) -> AdaptRecord:
    """Continue GPT-2's pretraining on ``options.mail`` (or on ``rows``, mail already read and
    tokenised: ``train --adapt-steps`` gives its training split's); write the checkpoint to
    ``options.out``."""
    stage = on_stage or (lambda _: None)
    counts = (
        options.steps,
        options.batch_size,
        options.context,
        options.save_every,
        options.held_out_windows,
    )
    if min(counts) < 1:
        raise UsageError("steps, batch size, context, save interval and held-out windows must be at least 1")
    if not 0 < options.held_out < 1:
        raise UsageError(f"held-out share {options.held_out}: give a fraction between 0 and 1")
    stage("loading model")
    gpt, origin = start_model(options.model, options.weights, options.seed)
    if options.attention_window is not None:
        set_attention_window(gpt, options.attention_window)
    if options.context > gpt.config.n_positions:
        raise TrainingError(
            f"--context {options.context} exceeds the model's {gpt.config.n_positions} positions"
        )
    stage("reading mail")
    if rows is None:
        streams = read_streams(options.mail, options.held_out, options.seed, options.context, on_warning)
    else:
        streams = streams_of(rows, options.held_out, options.seed, options.context)
    fingerprint = _fingerprint(options, origin, streams)
    options.out.mkdir(parents=True, exist_ok=True)
    state_path = options.out / STATE_FILE
    if options.resume and not state_path.is_file():
        raise TrainingError(f"nothing to resume: no {state_path}")

    gpt.to(options.device).train()
    # Weight decay on matrices only, as GPT-2 pretraining does (not biases, LayerNorms).
    decay = [p for p in gpt.parameters() if p.dim() >= 2]
    no_decay = [p for p in gpt.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=options.lr,
    )
    generator = torch.Generator().manual_seed(options.seed)
    train_stream = torch.from_numpy(streams.train)
    held = held_out_windows(streams.held_out, options.context, options.held_out_windows)
    step, seconds = 0, 0.0
    losses: list[float] = []
    evals: list[list[float]] = []  # [step, held-out loss]
    if options.resume:
        step, seconds, losses, evals = _restore(state_path, gpt, optimizer, generator, fingerprint)
        stage(f"resuming at step {step} of {options.steps}")
    else:
        stage("measuring the held-out loss")
        evals = [[0.0, evaluate(gpt, held, options.device)]]
        if on_eval is not None:
            on_eval(0, evals[0][1])
    stage("adapting")
    started = time.perf_counter()
    while step < options.steps:
        signum = requested()  # Ctrl-C / SIGTERM under the CLI's stop_on_signals: stop between steps
        if signum is not None:
            _save(state_path, gpt, optimizer, generator, fingerprint, step, seconds, losses, evals, started)
            raise Interrupted(signum)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, options)
        batch = sample_batch(train_stream, options, generator).to(options.device)
        loss = lm_loss(gpt, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, options.steps, losses[-1])
        if step % options.save_every == 0 or step == options.steps:
            evals.append([float(step), evaluate(gpt, held, options.device)])
            if on_eval is not None:
                on_eval(step, evals[-1][1])
            _save(state_path, gpt, optimizer, generator, fingerprint, step, seconds, losses, evals, started)
    seconds += time.perf_counter() - started
    stage("writing the checkpoint")
    write_checkpoint(gpt.cpu(), options.out)
    record = AdaptRecord(
        steps=step,
        messages=streams.messages,
        held_out_messages=streams.held_out_messages,
        training_tokens=len(streams.train),
        held_out_tokens=len(streams.held_out),
        held_out_loss_before=evals[0][1],
        held_out_loss_after=evals[-1][1],
        seconds=seconds,
        losses=losses,
        held_out_losses=evals,
        options={**fingerprint, "mail": [str(p) for p in options.mail]},
    )
    _atomic_write(options.out / RECORD_FILE, json.dumps(record.to_dict(), indent=1).encode())
    state_path.unlink(missing_ok=True)  # the checkpoint is complete: nothing left to resume
    return record


# --------------------------------------------------------------------------- state and checkpoint


def _save(
    path: Path,
    gpt: GPT,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    fingerprint: dict[str, Any],
    step: int,
    seconds: float,
    losses: list[float],
    evals: list[list[float]],
    started: float,
) -> None:
    scratch = path.with_name(path.name + ".tmp")
    state = {
        "fingerprint": fingerprint,
        "step": step,
        "seconds": seconds + time.perf_counter() - started,
        "losses": losses,
        "evals": evals,
        "model": gpt.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
    }
    torch.save(state, scratch)
    os.replace(scratch, path)  # atomic: a kill leaves the previous state or this one, never half


def _restore(
    path: Path,
    gpt: GPT,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    fingerprint: dict[str, Any],
) -> tuple[int, float, list[float], list[list[float]]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
        saved = state["fingerprint"]
    except Exception as error:  # torch.load raises many types for a damaged file
        raise TrainingError(f"cannot resume from {path}: {error}") from None
    if saved != fingerprint:
        changed = sorted(k for k in fingerprint if saved.get(k) != fingerprint[k])
        raise TrainingError(
            f"cannot resume from {path}: it was saved with other settings or mail ({', '.join(changed)}); "
            "run again without resume to start over"
        )
    gpt.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return int(state["step"]), float(state["seconds"]), list(state["losses"]), list(state["evals"])


def checkpoint_tensors(gpt: GPT) -> dict[str, torch.Tensor]:
    """Our state dict in the hub's GPT-2 layout: no prefix, Conv1D weights ``[in, out]``, no tied
    ``lm_head`` (the inverse of :func:`spamfilter.weights.copy_weights`)."""
    tensors = {}
    for name, tensor in gpt.state_dict().items():
        if name == "lm_head.weight":
            continue
        tensor = tensor.detach().cpu().float()
        tensors[name] = (tensor.t() if name.endswith(_CONV1D_WEIGHTS) else tensor).contiguous()
    return tensors


def write_checkpoint(gpt: GPT, out: Path) -> None:
    """``config.json`` + ``model.safetensors`` in ``out``, each replaced atomically."""
    from safetensors.torch import save_file

    config: dict[str, Any] = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    config.update(gpt.config.to_dict())
    scratch = out / (WEIGHTS_FILE + ".tmp")
    save_file(checkpoint_tensors(gpt), str(scratch), metadata={"format": "pt"})
    os.replace(scratch, out / WEIGHTS_FILE)
    _atomic_write(out / CONFIG_FILE, json.dumps(config, indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_bytes(data)
    os.replace(scratch, path)


__all__ = ["AdaptOptions", "AdaptRecord", "adapt", "write_checkpoint"]
