"""``spamfilter train`` and ``spamfilter export``: options parsed, then one library call each."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from ..interrupts import Interrupted, exit_code, interruptible, stop_between_steps, stop_on_signals
from ..modeldir import POOLINGS, remember_model_dir, train_output_dir
from ..train_options import (
    BALANCE_CHOICES,
    DEFAULT_MODEL,
    LABELLED_RECIPE,
    MAIL_RECIPE,
    MAX_MEMBERS,
    MEMBER_SEED_STEP,
    TRAINABLE_CHOICES,
    AdaptOptions,
    TrainingConfig,
    TrainOptions,
)
from ..windows import DISCOUNT_LIMIT, MAX_WINDOWS, WINDOW_DISCOUNT, WINDOWS_LIMIT
from .common import (
    CONTEXT,
    TRAIN_EXTRA_HINT,
    FiniteFloatRange,
    _console,
    _fail,
    _library_errors,
    choice_option,
    cli,
    count_option,
    mail_sources_options,
)

# numpy's and pandas' seeds (the splits, undersampling) are unsigned 32-bit numbers
SEED_MAX = 2**32 - 1


def _out_option(help: str, required: bool = False) -> Callable[[Any], Any]:
    """``--out FOLDER``: where train, export and adapt write."""
    path = click.Path(file_okay=False, path_type=Path)
    return click.option("--out", type=path, default=None, required=required, help=help)


def _stopped(out: Path, say: Callable[[str], object], signum: int) -> NoReturn:
    """A resumable run (train, adapt) stopped by a signal: how to go on, and 128 + the signal."""
    say(f"interrupted: continue with the same command and --resume (state in {out})")
    sys.exit(exit_code(signum))


def _keep(best: bool) -> str:
    return "keep-best" if best else "keep-last"


def _flag_default(name: str) -> str:
    """A --NAME/--no-NAME recipe default, the same for either data or said for each."""
    mail, labelled = (
        name if getattr(r, name.replace("-", "_")) else f"no-{name}" for r in (MAIL_RECIPE, LABELLED_RECIPE)
    )
    return mail if mail == labelled else f"{mail} for --spam/--ham, else {labelled}"


@cli.command(context_settings=CONTEXT)
@click.option(
    "--model",
    default=None,
    help="gpt2-small|gpt2-medium|gpt2-large|gpt2-xl, or a Hugging Face config.json for another shape. "
    f"Default: the shape of --weights PATH, else {DEFAULT_MODEL}.",
)
@click.option(
    "--weights",
    default=None,
    help="Pretrained weights: a folder with config.json + model.safetensors, a .safetensors file, or "
    "'random'. Default: download --model from the Hugging Face hub.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Labelled messages: the UCI SMSSpamCollection file or a CSV/TSV with label and text columns. "
    "Default: download the SMS Spam Collection.",
)
@mail_sources_options("Spam to train on", "Wanted mail to train on")
# Every default below is the library's (train_options), declared there once.
@count_option("--epochs", TrainingConfig.epochs)
@count_option("--batch-size", TrainingConfig.batch_size)
@click.option("--lr", type=FiniteFloatRange(0, min_open=True), default=TrainingConfig.lr, show_default=True)
@click.option(
    "--weight-decay", type=FiniteFloatRange(0), default=TrainingConfig.weight_decay, show_default=True
)
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=TrainingConfig.seed, show_default=True)
@click.option(
    "--max-length",
    type=click.IntRange(1),
    default=None,
    help="Tokens per window (longer messages are read in several). "
    f"Default: {MAIL_RECIPE.max_length} for --spam/--ham (or the longest message if shorter); "
    "else the longest training message.",
)
@choice_option(
    "--trainable", TRAINABLE_CHOICES, TrainingConfig.trainable, "What is fine-tuned besides the new head."
)
@choice_option(
    "--pooling",
    POOLINGS,
    TrainOptions.pooling,
    "line-ends: the most spam-like of each window's line ends and its last token (text appended "
    "after a spam's lines cannot lower its score); last-token: each message's last real token; "
    "last: the last padded position, the reference recipe exactly.",
)
@click.option(
    "--attention-window",
    type=click.IntRange(min=0),
    default=None,
    help="Each position attends to its window's first line (the Subject) and to this many positions "
    "up to itself, so that text far before a line cannot change how it is read (a page of ham before "
    "the offer); 0: every earlier position, as GPT-2.  [default: "
    f"{MAIL_RECIPE.attention_window} for --spam/--ham from --weights random; else the weights' own]",
)
@click.option(
    "--weight-average",
    type=FiniteFloatRange(0, 1, max_open=True),
    default=None,
    metavar="DECAY",
    help="Keep a moving average of the weights over the training steps (this decay per step, e.g. "
    "0.995) and save it instead of the last step's: the constant learning rate leaves the last "
    "step's weights noisy; 0: none.  [default: "
    + (
        f"{MAIL_RECIPE.weight_average:g}"
        if MAIL_RECIPE.weight_average == LABELLED_RECIPE.weight_average
        else f"{MAIL_RECIPE.weight_average:g} for --spam/--ham, else {LABELLED_RECIPE.weight_average:g}"
    )
    + "]",
)
@click.option(
    "--max-windows",
    type=click.IntRange(1, WINDOWS_LIMIT),
    default=MAX_WINDOWS,
    show_default=True,
    metavar="N",
    help="Read a long message in at most N windows (its Subject and the next stretch of the body), "
    "recorded with the model: the filter reads as many, and the threshold is chosen on that score. "
    "The default reads every window of the 20,000 characters of text read in ordinary mail; fewer "
    "leave stretches of a long message unread, where a spam between pages of ham can hide.",
)
@click.option(
    "--window-discount",
    type=FiniteFloatRange(0, DISCOUNT_LIMIT),
    default=WINDOW_DISCOUNT,
    show_default=True,
    metavar="D",
    help="A message read in n windows scores as its highest window less D * ln(n) in log-odds "
    "(recorded with the model): the highest of many windows of a long ham reads higher by chance, "
    "and this keeps long ham from setting the threshold. 0: the highest window as it is.",
)
@click.option(
    "--members",
    type=click.IntRange(1, MAX_MEMBERS),
    default=TrainOptions.members,
    show_default=True,
    metavar="N",
    help="Train N models from different initial weights (--seed, --seed + 1000, ...) and read them as "
    "one, their log-odds averaged: runs that differ only in their seed disagree on the few ham that "
    "score highest, and their mean ranks better at a small false-positive rate. Training and "
    "filtering each cost N runs' time (e.g. 3 members of 1 layer cost about what 1 of 2 layers does).",
)
@_out_option("Model directory to write. Default: $SPAMFILTER_MODEL or ~/.local/share/spamfilter/model.")
@choice_option("--device", ("auto", "cpu", "cuda"), "auto")
@click.option(
    "--balance",
    type=click.Choice(BALANCE_CHOICES),
    default=None,
    help="undersample: drop ham down to the spam count (the SMS recipe); weight: keep every message "
    f"and weight the loss by class.  [default: {MAIL_RECIPE.balance} for --spam/--ham, else "
    f"{LABELLED_RECIPE.balance}]",
)
@click.option(
    "--keep-best/--keep-last",
    default=None,
    help="Keep the epoch with the lowest validation loss, stopping after 2 epochs without a better one; "
    f"or the last epoch (the SMS recipe).  [default: {_keep(MAIL_RECIPE.keep_best)} for --spam/--ham]",
)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Also train on two copies of each training spam with ordinary ham text before and after "
    "its body, and on every window of long ham, so that padding around an offer does not hide it "
    f"(measured: it cost recall at low false-positive rates).  [default: {_flag_default('augment')}]",
)
@click.option(
    "--interleave/--no-interleave",
    default=None,
    help="Also train on a copy of each training spam with a sentence of training ham after every "
    "first to third line of its body, so that an offer read between lines of ordinary mail is "
    "still read as spam (measured: it cost recall on untouched and on interleaved spam).  "
    f"[default: {_flag_default('interleave')}]",
)
@click.option(
    "--link-copies/--no-link-copies",
    default=None,
    help="Also train on a copy of each training message that shows a link, cut down to its Subject "
    "and one or two of its links and labelled as the message, so that a spam sent as a bare link is "
    f"still read as spam.  [default: {_flag_default('link-copies')}]",
)
@click.option(
    "--subject-copies/--no-subject-copies",
    default=None,
    help="Also train on a copy of each training spam under the Subject of a random training ham, so "
    "that a spam with a harmless Subject is judged by its body.  "
    f"[default: {_flag_default('subject-copies')}]",
)
@click.option(
    "--remember-training/--no-remember-training",
    default=None,
    help="Keep a memory of the training messages with the model (memory.npz: 64 hashes of each "
    "one's runs of five words): mail that holds a training spam's own runs scores higher, however "
    "much ham surrounds it; the threshold is chosen on those scores.  "
    f"[default: {_flag_default('remember-training')}]",
)
@click.option(
    "--adapt-steps",
    type=click.IntRange(min=0),
    default=None,
    help="First continue the model's next-token pretraining for this many steps on the training "
    "split's text (labels unused; never the validation or test messages), then fine-tune from "
    "those weights.  [default: "
    + (
        f"{MAIL_RECIPE.adapt_steps}"
        if MAIL_RECIPE.adapt_steps == LABELLED_RECIPE.adapt_steps
        else f"{MAIL_RECIPE.adapt_steps} for --spam/--ham, else {LABELLED_RECIPE.adapt_steps}"
    )
    + "]",
)
@click.option(
    "--target-fpr",
    type=FiniteFloatRange(0, 1, max_open=True),
    default=None,
    help="Choose the threshold on the validation split so that at most this share of ham is marked "
    f"spam.  [default: {MAIL_RECIPE.target_fpr} for --spam/--ham; else the threshold is 0.5]",
)
@choice_option(
    "--quantize",
    ("int8", "none"),
    TrainOptions.quantize or "none",
    "Also write an int8 model: the default variant where its verdicts agree with fp32's on >= 99% "
    "of the test split (model.onnx stays; --variant fp32 selects it).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run after its last finished epoch.")
@click.option(
    "--force",
    is_flag=True,
    help="Without --out: replace the model already at $SPAMFILTER_MODEL or the default location "
    "(refused otherwise; --out DIR writes where it says).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress within each epoch on stderr: a live bar on a terminal, else (a log) a line a minute. "
    "Phases and each epoch's figures are printed either way.  [default: progress]",
)
def train(
    model: str | None,
    weights: str | None,
    data: Path | None,
    spam_sources: tuple[Path, ...],
    ham_sources: tuple[Path, ...],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    max_length: int | None,
    trainable: str,
    pooling: str,
    attention_window: int | None,
    weight_average: float | None,
    max_windows: int,
    window_discount: float,
    members: int,
    out: Path | None,
    device: str,
    balance: str | None,
    keep_best: bool | None,
    augment: bool | None,
    interleave: bool | None,
    link_copies: bool | None,
    subject_copies: bool | None,
    remember_training: bool | None,
    adapt_steps: int | None,
    target_fpr: float | None,
    quantize: str,
    resume: bool,
    force: bool,
    progress: bool | None,
) -> None:
    """Fine-tune GPT-2 as a spam classifier and export it as a model directory.

    After each epoch the training state is saved in the output directory; if a run is interrupted,
    the same command with --resume continues after the last finished epoch."""
    if seed + (members - 1) * MEMBER_SEED_STEP > SEED_MAX:
        raise click.BadParameter(
            f"{seed} leaves no room for --members {members} (member i trains with --seed + "
            f"{MEMBER_SEED_STEP} * i, at most {SEED_MAX})",
            param_hint="'--seed'",
        )
    if out is None and not (resume or force):
        _refuse_to_replace(train_output_dir())
    console = _console()
    try:
        from ..export import describe_export
        from ..finetune import describe_result, fine_tune, resolve_device
    except ImportError as error:  # a base (filter-only) install
        _fail(f"{TRAIN_EXTRA_HINT} ({error})")
    from ..mail import check_sources

    with _library_errors():
        check_sources(data, spam_sources, ham_sources, "--data", required=False)
        torch_device = resolve_device(device)
    # Every input that is missing, named at once before anything loads (offline: data and weights).
    from ..train_inputs import describe, missing_inputs

    missing = missing_inputs(data, spam_sources, ham_sources, weights, model)
    if missing:
        _fail(describe(missing))
    options = TrainOptions(
        model=model,
        weights=weights,
        data=data,
        spam=list(spam_sources),
        ham=list(ham_sources),
        max_length=max_length,
        pooling=pooling,
        attention_window=attention_window,
        weight_average=weight_average,
        max_windows=max_windows,
        window_discount=window_discount,
        members=members,
        balance=balance,
        keep_best=keep_best,
        augment=augment,
        interleave=interleave,
        link_copies=link_copies,
        subject_copies=subject_copies,
        remember_training=remember_training,
        adapt_steps=adapt_steps,
        target_fpr=target_fpr,
        training=TrainingConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            trainable=trainable,
        ),
        out=out or train_output_dir(),
        device=torch_device,
        quantize=None if quantize == "none" else quantize,
        resume=resume,
    )
    from ..train_progress import TrainingProgress

    display = TrainingProgress(console, epochs, steps=progress is not False)
    try:
        with _library_errors(), display:
            result = fine_tune(
                options,
                on_step=display.step,
                on_epoch=display.epoch,
                on_stage=display.stage,
                on_download=display.download,
                on_warning=display.warn,
            )
    except OSError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _stopped(options.out, console.print, signal.SIGINT)
    for line in [*describe_result(result, options.out), *describe_export(options.out, result.manifest)]:
        console.print(line)
    remember_model_dir(options.out)


def _refuse_to_replace(target: Path) -> None:
    """train without --out writes to $SPAMFILTER_MODEL or the default location: a trained model
    there (the one filter runs) is replaced only when --force asks for it."""
    if (target / "spamfilter.json").exists():
        where = "$SPAMFILTER_MODEL" if os.environ.get("SPAMFILTER_MODEL") else "the default location"
        raise click.UsageError(
            f"a trained model is already at {target} ({where}): pass --out DIR to train another, "
            "or --force to replace it"
        )


@cli.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@_out_option("Model directory to write. Default: the checkpoint's own directory.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None, help="Also write an int8 model.")
def export(checkpoint: Path, out: Path | None, quantize: str | None) -> None:
    """Export a checkpoint (model.pt, or a model directory) to ONNX again."""
    console = _console()
    try:
        from ..export import describe_export, reexport
    except ImportError as error:  # a base (filter-only) install
        _fail(f"{TRAIN_EXTRA_HINT} ({error})")
    try:
        with _library_errors(), console.status("exporting to ONNX and checking it against torch…"):
            target, manifest = reexport(checkpoint, out, quantize)
    except OSError as error:
        _fail(str(error))
    for line in describe_export(target, manifest):
        console.print(line)


@cli.command(context_settings=CONTEXT)
@click.option(
    "--mail",
    "mail_sources",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Unlabelled mail, spam and ham alike: an mbox, a Maildir, a folder of message files or a "
    ".tar/.tar.gz/.tar.bz2 of them (repeatable).",
)
@_out_option(
    "Folder for the adapted checkpoint (config.json + model.safetensors) and adapt.json.", required=True
)
@click.option("--model", default=None, help="As train --model: a size name or a config.json (the shape).")
@click.option(
    "--weights", default=None, help="As train --weights: the start (a folder, .safetensors, a size, random)."
)
@count_option("--steps", AdaptOptions.steps)
@count_option("--context", AdaptOptions.context, "Tokens per window.")
@count_option("--batch-size", AdaptOptions.batch_size)
@click.option("--lr", type=FiniteFloatRange(0, min_open=True), default=AdaptOptions.lr, show_default=True)
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=AdaptOptions.seed, show_default=True)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run from its last saved state in --out."
)
def adapt(
    mail_sources: tuple[Path, ...],
    out: Path,
    model: str | None,
    weights: str | None,
    steps: int,
    context: int,
    batch_size: int,
    lr: float,
    seed: int,
    resume: bool,
) -> None:
    """Continue GPT-2's next-token pretraining on your own unlabelled mail, for train --weights OUT."""
    try:
        from ..adapt import adapt as run_adapt
    except ImportError as error:  # a base (filter-only) install: torch is the train extra's
        _fail(f"{TRAIN_EXTRA_HINT} ({error})")
    options = AdaptOptions(
        mail=list(mail_sources),
        out=out,
        model=model,
        weights=weights,
        steps=steps,
        context=context,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        resume=resume,
    )

    def step(done: int, total: int, loss: float) -> None:
        stop_between_steps()  # a step is done: a signal now stops at the next one, its state saved
        if done == total or done % 10 == 0:
            click.echo(f"spamfilter: step {done}/{total} loss {loss:.3f}", err=True)

    def held_out(done: int, loss: float) -> None:
        click.echo(f"spamfilter: step {done} held-out loss {loss:.3f}", err=True)

    try:
        # Until the first step ends a signal stops at once; then between steps (adapt.py saves there).
        with _library_errors(), stop_on_signals(), interruptible():
            record = run_adapt(
                options,
                on_step=step,
                on_eval=held_out,
                on_stage=lambda stage: click.echo(f"spamfilter: {stage}", err=True),
                on_warning=lambda line: click.echo(f"spamfilter: {line}", err=True),
            )
    except OSError as error:
        _fail(str(error))
    except (KeyboardInterrupt, Interrupted) as stop:
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        _stopped(out, lambda line: click.echo(f"spamfilter: {line}", err=True), signum)
    click.echo(
        f"adapted on {record.messages} messages ({record.held_out_messages} held out), {record.steps} steps: "
        f"held-out loss {record.held_out_loss_before:.3f} -> {record.held_out_loss_after:.3f}"
    )
    click.echo(f"checkpoint: {out} (spamfilter train --weights {out} ...)")
