"""``spamfilter train`` as a library call: data -> tokens -> GPT-2 -> fine-tune -> model directory."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .adapt import RECORD_FILE, STATE_FILE, AdaptRecord, adapt
from .augment import augment_spam, interleaved_copies, link_only_copies, subject_copies
from .calibration import calibrate, needs_more_ham
from .data import (
    NEEDS_BOTH,
    DownloadProgress,
    Splits,
    balance,
    check_split_sizes,
    download_sms,
    random_split,
    read_labelled,
    read_mail,
)
from .errors import TrainingError, UsageError
from .export import write_model_directory
from .mail import check_sources
from .members import finished_members, train_members
from .memory import MEMORY_FILE, TRAINING_KEY, Memory, write_memory
from .metrics import (
    RANDOM_INITIALISATION,
    Calibration,
    coarse_calibration,
    compute_metrics,
    near_chance,
    threshold_sweep,
)
from .model import (
    GPT,
    GPT2_SIZES,
    GPTConfig,
    SpamClassifier,
    SpamModel,
    add_classification_head,
    set_attention_window,
)
from .modeldir import MAIL_MAX_LENGTH, Manifest
from .tokenizer import PAD_TOKEN_ID, Tokenizer
from .train_loop import EpochCallback, ProgressCallback, TrainingRecord, train_classifier
from .train_options import (
    BALANCE_CHOICES,
    DEFAULT_MODEL,
    KEEP_BEST_PATIENCE,
    MAX_MEMBERS,
    RANDOM_WEIGHTS,
    AdaptOptions,
    TrainOptions,
)
from .weights import HUB_REPOS, WEIGHTS_FILE, load_pretrained
from .windows import DISCOUNT_LIMIT, END_AT_PARAGRAPH, MAX_WINDOWS, WINDOWS_LIMIT, combine, later_windows

ADAPTED_FOLDER = "adapted"  # train --adapt-steps: the adapted weights, until the model directory is complete
ADAPT_LR = 1e-3  # bench_adapt's, for train --adapt-steps (RESULTS section 15)
CUSTOM_ARCHITECTURE = "custom"  # any shape that is not one of GPT2_SIZES; the dims are in the config
TRAINING_STATE = "training-state.pt"  # in the output directory until the model directory is complete


@dataclass
class TrainResult:
    record: TrainingRecord
    manifest: Manifest
    splits: Splits
    max_length: int
    threshold: float = 0.5
    calibration: Calibration | None = None


def architecture(model: str) -> GPTConfig:
    """GPT-2 configuration for a size name or a Hugging Face ``config.json`` (file or folder)."""
    if model in GPT2_SIZES:
        return GPT2_SIZES[model]
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise TrainingError(f"--model {model}: give one of {', '.join(GPT2_SIZES)} or a config.json")
    try:
        return GPTConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise TrainingError(f"--model {model}: not a GPT-2 config.json ({error})") from None


def architecture_name(config: GPTConfig) -> str:
    """The GPT-2 size whose configuration ``config`` is, else :data:`CUSTOM_ARCHITECTURE`."""
    return next((name for name, size in GPT2_SIZES.items() if size == config), CUSTOM_ARCHITECTURE)


def describe_shape(config: GPTConfig) -> str:
    return (
        f"{config.n_layer} layers, {config.n_embd} dims, {config.n_head} heads, "
        f"{config.n_positions} positions, vocabulary {config.vocab_size}"
    )


def build_classifier(
    model: str | None, weights: str | None, pooling: str, seed: int, attention_window: int | None = None
) -> tuple[SpamClassifier, str]:
    """The GPT-2 with its new head, and a description of where its weights came from; with an
    ``attention_window``, that window instead of the loaded shape's own (0: none).

    The shape is the one that was loaded: with ``weights`` a folder or file, its configuration.
    A ``model`` given as well must then describe the same shape, or this raises ``TrainingError``
    (naming a size is no way to reshape weights, and silently ignoring it would mislabel them).
    """
    if weights == RANDOM_WEIGHTS:
        torch.manual_seed(seed)
        gpt = GPT(architecture(model or DEFAULT_MODEL))
        origin = RANDOM_INITIALISATION
    elif weights is None:
        model = model or DEFAULT_MODEL
        if model not in HUB_REPOS:
            raise TrainingError(
                f"--model {model} has no hub weights: pass --weights PATH or --weights random"
            )
        gpt = load_pretrained(model)
        origin = model
    else:
        expected = architecture(model) if model is not None else None  # a bad --model fails before loading
        gpt = load_pretrained(weights)
        origin = weights
        if expected is not None and not gpt.config.same_shape(expected):
            raise TrainingError(
                f"--model {model} ({describe_shape(expected)}) does not match --weights {weights} "
                f"({describe_shape(gpt.config)}): leave out --model to train the weights' own shape"
            )
    if attention_window is not None:  # 0: every earlier position, whatever the weights' config said
        set_attention_window(gpt, attention_window)
    torch.manual_seed(seed)  # the head's initialisation is part of the recipe's reproducibility
    return SpamClassifier(add_classification_head(gpt), pooling, PAD_TOKEN_ID), origin


def resolve_device(choice: str) -> str:
    """``auto``, ``cpu`` or ``cuda`` to the torch device to train on; ``cuda`` must really be there."""
    if choice not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {choice}: choose auto, cpu or cuda")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available to torch here")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def kept_epochs(record: TrainingRecord) -> str:
    """The epoch whose weights were kept, or each member's (train --members)."""
    if not record.members:
        return str(record.best_epoch)
    return ", ".join(str(member["best_epoch"]) for member in record.members) + " (one per member)"


def describe_result(result: TrainResult, out: Path) -> list[str]:
    """The end of a training run in a few lines: what trained, how it scored, where it went."""
    record, test = result.record, result.manifest.metrics.get("test", result.record.test)
    lines = [
        f"trainable parameters {record.trainable_parameters:,}; max_length {result.max_length}; "
        f"{record.seconds:.1f} s; weights of epoch {kept_epochs(record)}",
        f"train accuracy {record.train_accuracy:.2%} | validation accuracy {record.validation_accuracy:.2%}",
    ]
    calibration = result.calibration
    if calibration is not None:
        chosen_on = "the validation split"
        if calibration.fitted_ham:
            chosen_on += f" with the training ham ({calibration.fitted_ham} ham in all)"
        lines.append(
            f"threshold {calibration.threshold:.4f}: chosen on {chosen_on} for a false-positive "
            f"rate of at most {calibration.target_fpr:.2%} (there: {calibration.validation_fpr:.2%} of "
            f"{calibration.validation_ham} ham, recall {calibration.validation_recall:.2%})"
        )
    lines += [
        f"test at threshold {result.threshold:.4f}: accuracy {test['accuracy']:.2%} "
        f"precision {test['precision']:.2%} recall {test['recall']:.2%} F1 {test['f1']:.2%} "
        f"false-positive rate {test['false_positive_rate']:.2%} (n={test['n']})",
    ]
    low_fpr = low_fpr_figures(result.manifest.metrics)
    if low_fpr:
        lines.append(low_fpr)
    sweep = {
        point["target"]: point["recall"] for point in result.manifest.metrics.get("test_threshold_sweep", [])
    }
    warning = near_chance(
        float(test["roc_auc"]),
        float(test["recall"]),
        result.threshold,
        result.manifest.recipe,
        result.manifest.base_model,
        (0.005, float(sweep[0.005])) if 0.005 in sweep else None,
    )
    if warning is not None:
        lines.append(f"warning: {warning}")
    lines.append(f"model directory: {out}")
    return lines


def low_fpr_figures(metrics: dict[str, Any]) -> str | None:
    """The figures of record for mail, from the manifest's test metrics: spam recall where 0.1 %
    and 0.5 % of the test ham are marked spam, and (1 - ROC area) % as TREC reports it."""
    sweep = {point["target"]: point for point in metrics.get("test_threshold_sweep", [])}
    test = metrics.get("test", {})
    if 0.001 not in sweep or "roc_auc" not in test:
        return None
    recalls = "; ".join(
        f"{sweep[target]['recall']:.2%} at {target:.1%} FPR" for target in (0.001, 0.005) if target in sweep
    )
    return f"test spam recall {recalls}; (1 - ROC area) {100 * (1 - float(test['roc_auc'])):.3f} %"


def load_splits(
    options: TrainOptions,
    on_download: DownloadProgress | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> tuple[Splits, str]:
    """Balanced, split data: from mail sources, a labelled file, or the SMS Spam Collection.
    ``on_warning`` hears of skipped files and of messages given as both spam and ham."""
    seed = options.training.seed
    check_sources(options.data, options.spam, options.ham, "--data", required=False)
    undersample = mail_settings(options).balance == "undersample"
    if options.spam:
        frame = read_mail(options.spam, options.ham, on_warning)
        origin = (
            "mail: spam " + ", ".join(map(str, options.spam)) + "; ham " + ", ".join(map(str, options.ham))
        )
    else:
        path = options.data if options.data is not None else download_sms(progress=on_download)
        frame, origin = read_labelled(path), str(Path(path).resolve())
    if not undersample and frame["Label"].nunique() < 2:
        raise UsageError(NEEDS_BOTH)
    return random_split(balance(frame, seed) if undersample else frame, seed=seed), origin


def mail_settings(options: TrainOptions) -> TrainOptions:
    """``options`` with the recipe's data-dependent settings decided: each one not given is the data's
    recipe's (``TrainOptions.data_recipe``: mail or labelled)."""
    recipe = options.data_recipe
    balance_choice = options.balance or recipe.balance
    if balance_choice not in BALANCE_CHOICES:
        raise UsageError(f"--balance {balance_choice}: choose {' or '.join(BALANCE_CHOICES)}")
    keep_best = recipe.keep_best if options.keep_best is None else options.keep_best
    average = recipe.weight_average if options.weight_average is None else options.weight_average
    if not 0.0 <= average < 1.0:  # NaN included: refused before any data is read
        raise UsageError(f"--weight-average {average}: choose a decay from 0 (none) up to, not including, 1")
    if not 1 <= options.max_windows <= WINDOWS_LIMIT:
        raise UsageError(f"--max-windows {options.max_windows}: choose 1 to {WINDOWS_LIMIT}")
    if not 0 <= options.window_discount <= DISCOUNT_LIMIT:  # NaN included
        raise UsageError(f"--window-discount {options.window_discount}: choose 0 to {DISCOUNT_LIMIT:g}")
    if not 1 <= options.members <= MAX_MEMBERS:  # the library's callers too: no empty ensemble
        raise UsageError(f"--members {options.members}: choose 1 to {MAX_MEMBERS}")
    training = replace(
        options.training,
        weighted_loss=balance_choice == "weight",
        keep_best=keep_best,
        patience=options.training.patience or (KEEP_BEST_PATIENCE if keep_best else 0),
        weight_average=average,
    )
    return replace(
        options,
        balance=balance_choice,
        keep_best=keep_best,
        target_fpr=recipe.target_fpr if options.target_fpr is None else options.target_fpr,
        augment=recipe.augment if options.augment is None else options.augment,
        interleave=recipe.interleave if options.interleave is None else options.interleave,
        link_copies=recipe.link_copies if options.link_copies is None else options.link_copies,
        subject_copies=recipe.subject_copies if options.subject_copies is None else options.subject_copies,
        remember_training=(
            recipe.remember_training if options.remember_training is None else options.remember_training
        ),
        adapt_steps=recipe.adapt_steps if options.adapt_steps is None else options.adapt_steps,
        attention_window=default_attention_window(options),
        weight_average=training.weight_average,
        training=training,
    )


def default_attention_window(options: TrainOptions) -> int | None:
    """The attention window to train with: the one given; without one, the recipe's for a model
    trained from random weights, which learns to read through it from the start, and None
    otherwise (pretrained weights keep the attention they were pretrained with)."""
    if options.attention_window is not None:
        return options.attention_window
    if options.weights == RANDOM_WEIGHTS and options.data_recipe.attention_window:
        return options.data_recipe.attention_window
    return None


def default_max_length(options: TrainOptions, longest: int, context: int) -> int:
    """Without --max-length: the longest training message (the seed recipe), except for mail, whose
    longest message runs to thousands of tokens: the mail recipe's max_length, or the model's context
    if shorter (the length measured best per time on the SpamAssassin corpus, bench_recipe.py)."""
    cap = options.data_recipe.max_length
    return longest if cap is None else min(longest, cap, context)


def training_data_kind(options: TrainOptions, data_origin: str) -> str:
    """What the model learnt from, for the domain guard: mail (--spam/--ham), sms (the SMS Spam
    Collection, downloaded or given), or labelled (another labelled file: unknown kind)."""
    if options.spam or data_origin.startswith("mail:"):
        return "mail"
    if options.data is None or data_origin.endswith("SMSSpamCollection"):
        return "sms"
    return "labelled"


def windowed_probabilities(
    classifier: SpamModel,
    tokenizer: Tokenizer,
    rows: list[list[int]],
    first_windows: np.ndarray,
    max_length: int,
    max_windows: int = MAX_WINDOWS,
    discount: float = 0.0,
    end_at_paragraph: bool = False,
) -> np.ndarray:
    """P(spam) per text as the filter computes it (:func:`spamfilter.windows.combine`): the highest
    of its windows' (at most ``max_windows``, the end read from a paragraph with
    ``end_at_paragraph``), less ``discount`` log-odds per ln(windows read).
    ``first_windows`` are the scores already computed of every text's first ``max_length`` tokens
    (a text's first window is exactly that), so only the later windows of long texts are run here."""
    windows, owners = later_windows(rows, max_length, max_windows, end_at_paragraph)
    if not windows:
        return first_windows
    device = next(classifier.parameters()).device
    ids = torch.tensor(tokenizer.pad(windows, max_length), device=device)
    scores = []
    was_training = classifier.training
    classifier.eval()
    with torch.no_grad():
        for begin in range(0, len(ids), 32):
            scores.append(torch.softmax(classifier(ids[begin : begin + 32]), dim=-1)[:, 1].float().cpu())
    classifier.train(was_training)
    every = np.concatenate([first_windows, torch.cat(scores).numpy().astype(np.float64)])
    owner_of = np.concatenate([np.arange(len(first_windows)), owners])
    return combine(every, owner_of, len(first_windows), discount)


def training_memory(train: pd.DataFrame) -> Memory:
    """A memory (memory.py) of the training split's real messages, by their class."""
    return Memory.of(
        (f"{TRAINING_KEY}{number}", int(label), str(text), 0.0)
        for number, (label, text) in enumerate(zip(train["Label"], train["Text"], strict=True))
    )


def training_ham_scores(
    classifier: SpamModel,
    tokenizer: Tokenizer,
    rows: list[list[int]],
    labels: np.ndarray,
    first_windows: np.ndarray,
    max_length: int,
    max_windows: int = MAX_WINDOWS,
    discount: float = 0.0,
) -> np.ndarray:
    """P(spam) of the training ham as the filter computes it, every window, for the tail fit of a
    small false-positive budget (spamfilter.calibration); ``first_windows`` are the training
    run's scores of the same rows."""
    ham = np.flatnonzero(labels == 0)
    return windowed_probabilities(
        classifier,
        tokenizer,
        [rows[i] for i in ham],
        first_windows[ham],
        max_length,
        max_windows,
        discount,
        END_AT_PARAGRAPH,
    )


def adapt_to_training_split(
    options: TrainOptions, rows: list[list[int]], stage: Callable[[str], None]
) -> AdaptRecord:
    """Next-token pretraining on the training split's token ``rows`` from ``options``' start weights,
    into ``ADAPTED_FOLDER`` of the output directory: the settings measured in ``bench_adapt``
    (batches of 4 windows of the recipe's length, lr 1e-3, a tenth of the steps warming up). The
    validation and test messages are never read, so the test figures stay honest. An interrupted
    run resumes with ``--resume``; a finished adaptation is reused as it is."""
    folder = options.out / ADAPTED_FOLDER
    steps = options.adapt_steps or 0
    adapt_options = AdaptOptions(
        mail=[],
        out=folder,
        model=options.model,
        weights=options.weights,
        steps=steps,
        context=options.max_length or options.data_recipe.max_length or MAIL_MAX_LENGTH,
        lr=ADAPT_LR,
        warmup=max(1, steps // 10),
        save_every=max(1, min(100, steps // 4)),
        held_out_windows=64,
        seed=options.training.seed,
        device=options.device,
        resume=options.resume and (folder / STATE_FILE).is_file(),
        attention_window=options.attention_window,
    )

    if options.resume and not (folder / STATE_FILE).is_file():
        finished = finished_adaptation(folder, adapt_options)
        if finished is not None:
            return finished

    def report(step: int, loss: float) -> None:
        stage(f"adaptation: held-out next-token loss {loss:.3f} at step {step} of {steps}")

    return adapt(adapt_options, on_eval=report, rows=rows)


# What a finished adaptation must have been run with to be reused by `train --resume`.
_REUSED_IF_EQUAL = ("model", "steps", "context", "batch_size", "lr", "warmup", "seed", "attention_window")


def finished_adaptation(folder: Path, options: AdaptOptions) -> AdaptRecord | None:
    """The record of an adaptation that finished in ``folder`` with ``options``' settings, or None
    (none there, another run's settings, or a record that cannot be read: then it adapts again)."""
    try:
        record = AdaptRecord(**json.loads((folder / RECORD_FILE).read_text()))
        same = all(record.options.get(name) == getattr(options, name) for name in _REUSED_IF_EQUAL)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return record if same and (folder / WEIGHTS_FILE).is_file() else None


def adaptation_summary(record: AdaptRecord) -> dict[str, Any]:
    """What the manifest keeps of an adaptation: enough to tell whether it learnt anything."""
    return {
        "steps": record.steps,
        "messages": record.messages,
        "held_out_messages": record.held_out_messages,
        "held_out_loss_before": round(record.held_out_loss_before, 4),
        "held_out_loss_after": round(record.held_out_loss_after, 4),
        "seconds": round(record.seconds, 1),
    }


def fine_tune(
    options: TrainOptions,
    splits: Splits | None = None,
    data_origin: str = "",
    on_step: ProgressCallback | None = None,
    on_epoch: EpochCallback | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_download: DownloadProgress | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> TrainResult:
    """Run the whole recipe and write the model directory to ``options.out``."""
    stage = on_stage or (lambda _: None)
    options = mail_settings(options)
    config = options.training
    if splits is None:
        stage("loading data")
        splits, data_origin = load_splits(options, on_download, on_warning)
    check_split_sizes(splits, config.batch_size)  # before anything is written to options.out
    # The model trains on the augmented training split; the splits' sizes and the training data
    # recorded stay those of the real messages.
    frames = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    if options.link_copies:
        frames["train"] = link_only_copies(frames["train"], config.seed)
    if options.subject_copies:  # copies of the real spam only, before other copies are added
        frames["train"] = pd.concat(
            [frames["train"], subject_copies(splits.train, config.seed)], ignore_index=True
        )
    if options.augment:
        frames["train"] = augment_spam(frames["train"], config.seed)
    if options.interleave:  # copies of the real spam only, not of the copies above
        copies = interleaved_copies(splits.train, config.seed)
        frames["train"] = pd.concat([frames["train"], copies], ignore_index=True)
    stage("tokenising")
    tokenizer = Tokenizer()
    rows = {
        name: tokenizer.encode_batch(frames[name]["Text"].tolist())
        for name in ("train", "validation", "test")
    }
    longest = max((len(r) for r in rows["train"][: len(splits.train)]), default=1)  # real messages
    adaptation = None
    weights = options.weights
    if options.adapt_steps:
        stage(f"adapting to the training split's text ({options.adapt_steps} steps)")
        adaptation = adapt_to_training_split(options, rows["train"][: len(splits.train)], stage)
        weights = str(options.out / ADAPTED_FOLDER)
    stage("loading model")
    classifier, origin = build_classifier(
        options.model, weights, options.pooling, config.seed, options.attention_window
    )
    if adaptation is not None:
        # what adaptation started from, not the scratch folder; named as a run without adaptation names it
        started = adaptation.options["weights"]
        origin = RANDOM_INITIALISATION if started == RANDOM_WEIGHTS else started
    max_length = options.max_length or default_max_length(options, longest, classifier.gpt.config.n_positions)
    if max_length > classifier.gpt.config.n_positions:
        raise TrainingError(
            f"--max-length {max_length} exceeds the model's context of {classifier.gpt.config.n_positions}"
        )
    labels = {name: frames[name]["Label"].to_numpy(np.int64) for name in rows}
    if options.augment:
        # The filter reads every window of a long message and keeps the highest score, so every
        # window of a ham must read as ham: a long newsletter's offers page is trained as ham too.
        ham = [rows["train"][i] for i in range(len(splits.train)) if labels["train"][i] == 0]
        further, _ = later_windows(ham, max_length, options.max_windows, END_AT_PARAGRAPH)
        rows["train"] = [*rows["train"], *further]
        labels["train"] = np.concatenate([labels["train"], np.zeros(len(further), dtype=np.int64)])
    arrays = {name: (tokenizer.pad(rows[name], max_length), labels[name]) for name in rows}
    stage("training")
    options.out.mkdir(parents=True, exist_ok=True)
    state_path = options.out / TRAINING_STATE
    resumable = state_path.is_file() or (options.members > 1 and bool(finished_members(options.out)))
    if options.resume and not resumable:
        raise TrainingError(f"nothing to resume: no {state_path}")
    features: dict[str, np.ndarray] = {}  # what the head reads, from the training run's cache

    def train_run(
        run: SpamClassifier, seed: int, into: dict[str, np.ndarray] | None = None
    ) -> TrainingRecord:
        """One run of the recipe with ``seed``: the single run, or a member (``into``: the features)."""
        return train_classifier(
            run,
            arrays["train"],
            arrays["validation"],
            arrays["test"],
            replace(config, seed=seed),
            device=options.device,
            on_step=on_step,
            on_epoch=on_epoch,
            on_stage=stage,
            state_path=state_path,
            resume=options.resume,
            features=into,
        )

    def build(seed: int) -> SpamClassifier:
        if seed == config.seed:
            return classifier
        return build_classifier(options.model, weights, options.pooling, seed, options.attention_window)[0]

    model: SpamModel = classifier
    if options.members == 1:
        record = train_run(classifier, config.seed, features)
    else:
        model, record, features = train_members(options, build, train_run, arrays, state_path, stage)
    # A long message is judged by its highest-scoring window (windows.py), so the threshold and
    # the test figures come from that same combined score, not from the first window alone.
    discount = options.window_discount
    for name in ("validation", "test"):
        attribute = f"{name}_spam_probability"
        first_windows = np.asarray(getattr(record, attribute), dtype=np.float64)
        combined = windowed_probabilities(
            model,
            tokenizer,
            rows[name],
            first_windows,
            max_length,
            options.max_windows,
            discount,
            END_AT_PARAGRAPH,
        )
        setattr(record, attribute, combined.tolist())
    remembered = training_memory(splits.train) if options.remember_training else None
    if remembered is not None:
        # The filter moves mail that holds a training spam's own runs (memory.py): the threshold
        # and the test figures come from the scores it will give.
        for name in ("validation", "test"):
            attribute = f"{name}_spam_probability"
            scores = remembered.scores(getattr(record, attribute), frames[name]["Text"].tolist())
            setattr(record, attribute, scores.tolist())
    # The figures at fixed false-positive rates, on that same combined score.
    record.test_threshold_sweep = [
        asdict(point) for point in threshold_sweep(arrays["test"][1], record.test_spam_probability)
    ]
    threshold, calibration, real = 0.5, None, len(splits.train)
    if options.target_fpr is not None:
        try:
            calibration = calibrate(
                arrays["validation"][1],
                record.validation_spam_probability,
                options.target_fpr,
                training_ham_scores(
                    model,
                    tokenizer,
                    rows["train"][:real],  # the real messages: augmented rows come after them
                    labels["train"][:real],
                    np.asarray(record.train_spam_probability[:real], dtype=np.float64),
                    max_length,
                    options.max_windows,
                    options.window_discount,
                )
                if needs_more_ham(int((arrays["validation"][1] == 0).sum()), options.target_fpr)
                else None,
            )
            threshold = calibration.threshold
            coarse = coarse_calibration(calibration)
            if coarse is not None and on_warning is not None:
                on_warning(coarse)
        except ValueError:  # a handful of messages: the validation split lacks a class
            if on_warning is not None:
                on_warning(
                    "the validation split lacks spam or ham, so no threshold could be chosen for "
                    f"--target-fpr {options.target_fpr}: it stays 0.5 (train on more mail)"
                )
    test_labels, test_probabilities = arrays["test"][1], record.test_spam_probability
    stage("exporting to ONNX")
    every_split = (splits.train, splits.validation, splits.test)
    manifest = {
        "base_model": {  # what was loaded, whatever --model said
            "architecture": architecture_name(classifier.gpt.config),
            "weights": origin,
            "config": classifier.gpt.config.to_dict(),
        },
        "recipe": {
            **record.config,  # pooling and max_length are the manifest's own fields (ModelRecipe)
            "max_windows": options.max_windows,
            "window_discount": options.window_discount,
            "end_at_paragraph": END_AT_PARAGRAPH,
            "balance": options.balance,
            "augment": bool(options.augment),
            "interleave": bool(options.interleave),
            "link_copies": bool(options.link_copies),
            "subject_copies": bool(options.subject_copies),
            "remember_training": bool(options.remember_training),
            "adapt_steps": options.adapt_steps or 0,
            "attention_window": classifier.gpt.config.attention_window or 0,
            "members": options.members,
            **({"adaptation": adaptation_summary(adaptation)} if adaptation is not None else {}),
            "target_fpr": options.target_fpr,
            "data": data_origin,
            "split_sizes": [len(splits.train), len(splits.validation), len(splits.test)],
        },
        "training_data": {
            "kind": training_data_kind(options, data_origin),
            "messages": sum(len(split) for split in every_split),
            "spam": int(sum((split["Label"] == 1).sum() for split in every_split)),
        },
        "metrics": {
            "train_accuracy": record.train_accuracy,
            "validation_accuracy": record.validation_accuracy,
            "best_epoch": record.best_epoch,
            "test": compute_metrics(test_labels, test_probabilities, threshold).to_dict(),
            "test_threshold_sweep": record.test_threshold_sweep,
            **({"calibration": calibration.to_dict()} if calibration is not None else {}),
        },
        "threshold": threshold,
    }
    written = write_model_directory(
        options.out,
        model.cpu(),
        max_length=max_length,
        test_ids=arrays["test"][0],
        test_labels=arrays["test"][1],
        manifest=manifest,
        training_record=record.to_dict(),
        quantize=options.quantize,
    )
    from .evaluate import EvalReport, write_report
    from .learn import write_features

    if remembered is not None:
        write_memory(options.out, remembered)  # memory.npz: the filter reads it with the model
    else:
        (options.out / MEMORY_FILE).unlink(missing_ok=True)  # an earlier run's into the same --out
    split_labels = {name: labels for name, (_, labels) in arrays.items()}
    write_features(options.out, features, split_labels)  # what `spamfilter learn` retrains the head on

    # The test split's report, as `spamfilter eval` would write it, from the torch model's scores.
    report = EvalReport.of(
        test_labels, test_probabilities, threshold, variant="torch", provider=str(options.device)
    )
    write_report(report, options.out)
    state_path.unlink(missing_ok=True)  # the model directory is complete: nothing left to resume
    for finished in finished_members(options.out):
        finished.unlink()
    shutil.rmtree(options.out / ADAPTED_FOLDER, ignore_errors=True)  # its weights are in the model now
    return TrainResult(record, written, splits, max_length, threshold, calibration)
