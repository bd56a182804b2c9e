"""What ``spamfilter train`` and ``spamfilter adapt`` can be asked and their defaults, declared once.

Torch-free: the command line reads its options' defaults and help from these dataclasses without
loading the training code (a filter-only install has no torch). ``finetune``, ``train_loop`` and
``adapt`` use them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .modeldir import DEFAULT_POOLING, MAIL_MAX_LENGTH, MAIL_TARGET_FPR
from .windows import MAX_WINDOWS, WINDOW_DISCOUNT

RANDOM_WEIGHTS = "random"  # --weights for a random initialisation (train_inputs keeps a stdlib copy)

DEFAULT_MODEL = (
    "gpt2-small"  # the shape without --model or --weights PATH (train_inputs repeats it: it imports nothing)
)
TRAINABLE_CHOICES = ("last-block", "last-two-blocks", "all", "head")
BALANCE_CHOICES = ("undersample", "weight")
MAX_MEMBERS = 8  # train --members: runs read as one model at most
MEMBER_SEED_STEP = 1000  # member i trains with seed + i * MEMBER_SEED_STEP (its weights and batches)
KEEP_BEST_PATIENCE = 2  # with --keep-best: epochs without a better validation loss before stopping


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 5
    batch_size: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.1
    seed: int = 123
    trainable: str = "last-block"
    eval_every: int = 50  # steps between loss estimates
    eval_batches: int = 5  # batches per step-wise loss estimate, as the reference recipe
    cache_frozen: bool = True
    # Mail has ~5x more ham than spam: weighting the loss by inverse class frequency keeps all of it
    # (the SMS recipe undersamples ham instead, and trains unweighted).
    weighted_loss: bool = False
    # Keep the weights of the epoch with the lowest validation loss (a larger model overfits mail
    # within two epochs); stop after `patience` epochs without improvement (0: run every epoch).
    keep_best: bool = False
    patience: int = 0
    # 0: the weights are the optimizer's last step. Else an exponential moving average of the
    # trainable weights with this decay per step: the epoch figures, the best epoch and the saved
    # model are the average's, which smooths the step-to-step noise of a constant learning rate.
    weight_average: float = 0.0


@dataclass(frozen=True)
class DataRecipe:
    """The settings the data decides where they are not given (``TrainOptions``' None)."""

    balance: str  # one of BALANCE_CHOICES
    keep_best: bool
    augment: bool
    interleave: bool
    link_copies: bool
    subject_copies: bool
    # Keep a memory of the training split's messages (memory.py) with the model: mail that holds a
    # training spam's own runs scores higher, and the threshold is chosen on those scores.
    remember_training: bool
    target_fpr: float | None  # None: the threshold is 0.5
    max_length: int | None  # tokens per window at most; None: the longest training message
    adapt_steps: int  # next-token steps on the training split's text before fine-tuning (0: none)
    # For a model trained from random weights: each position attends to the window's first line and
    # this many positions up to itself (0: every earlier position, GPT-2's). Pretrained weights keep
    # the attention they were pretrained with unless --attention-window says otherwise.
    attention_window: int
    weight_average: float  # TrainingConfig.weight_average: the decay of the kept weights' average (0: none)


# Mail (--spam/--ham): all the ham with a weighted loss, the best epoch by validation loss, and a
# threshold for MAIL_TARGET_FPR. Augmenting is off: on the SpamAssassin corpus it lowered recall at
# low false-positive rates more than it helped against padding (RESULTS section 12). Link-only
# copies are off: on one split they raised recall at 0.1 % FPR and against link-only spam, on
# another they lowered both (RESULTS section 21). From random weights the model reads through an
# attention window of 64: a page of ham before the offer then costs a third of the recall it did,
# and recall at 0.1 % FPR rose on both splits measured (RESULTS section 22). The kept weights are a
# moving average of the steps': recall at 0.1 % FPR and (1 - ROC area) % were better on the three
# splits measured, at no cost to filtering (RESULTS section 23). The model keeps a memory of its
# training mail (memory.py): on the three splits measured recall at 0.1 % FPR rose from 69.8 to
# 82.2 % (mean), the calibrated recall from 61.6 to 82.5 %, and a ham preamble and interleaved
# ham lines cost less recall (RESULTS section 38).
MAIL_RECIPE = DataRecipe(
    balance="weight",
    keep_best=True,
    augment=False,
    interleave=False,
    link_copies=False,
    subject_copies=False,
    remember_training=True,
    target_fpr=MAIL_TARGET_FPR,
    max_length=MAIL_MAX_LENGTH,
    adapt_steps=0,
    attention_window=64,
    weight_average=0.995,
)
# SMS and other labelled files: the seed recipe exactly (undersampling, last epoch, 0.5).
LABELLED_RECIPE = DataRecipe(
    balance="undersample",
    keep_best=False,
    augment=False,
    interleave=False,
    link_copies=False,
    subject_copies=False,
    remember_training=False,
    target_fpr=None,
    max_length=None,
    adapt_steps=0,
    attention_window=0,
    weight_average=0.0,
)


@dataclass
class TrainOptions:
    # A size name, or a Hugging Face config.json / folder holding one. None: the shape of the
    # `weights` folder or file, else DEFAULT_MODEL. Given with a weights path, it must match it.
    model: str | None = None
    weights: str | None = None  # None: the hub's weights for `model`; a path; or "random"
    data: Path | None = None  # None: the SMS Spam Collection, downloaded (unless spam/ham given)
    spam: list[Path] = field(default_factory=list)  # spam: mbox, Maildir, folder of messages, tar
    ham: list[Path] = field(default_factory=list)
    max_length: int | None = None  # None: the data's recipe (DataRecipe.max_length)
    # The last real token: on SMS its author measured 98.33 % against 95.67 % for the seed's last
    # padded position ("last", kept exactly), on mail bench_recipe measured it at least as well.
    pooling: str = DEFAULT_POOLING
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # The recipe's data-dependent settings; None picks them by the data: MAIL_RECIPE for mail
    # (--spam/--ham), LABELLED_RECIPE for SMS and other labelled files.
    balance: str | None = None
    keep_best: bool | None = None
    target_fpr: float | None = None
    # Two copies of each training spam with ham text before and after its body, and every window of
    # a long training ham (augment.py).
    augment: bool | None = None
    # A copy of each training spam with a sentence of training ham after every first to third line
    # of its body (augment.py).
    interleave: bool | None = None
    # A copy of every training message that shows a link, cut to its Subject and one or two of its
    # links, labelled as the message (augment.py).
    link_copies: bool | None = None
    # A copy of every training spam under the Subject of a random training ham (augment.py).
    subject_copies: bool | None = None
    # A memory of the training messages kept with the model (memory.py, DataRecipe.remember_training).
    remember_training: bool | None = None
    # Steps of next-token pretraining (adapt.py) on the training split's text, labels unused, before
    # the classifier is fine-tuned from those weights; never on the validation or test messages.
    adapt_steps: int | None = None
    # Each position attends to the window's first line and to this many positions up to itself
    # (model.GPTConfig.attention_window); 0: every earlier position, as GPT-2. None: the recipe's
    # for random weights (DataRecipe.attention_window), else the loaded shape's own.
    attention_window: int | None = None
    # The kept weights are a moving average of the steps' with this decay (TrainingConfig.
    # weight_average); 0: the optimizer's own. None: the data's recipe's.
    weight_average: float | None = None
    # Windows read per message at most (windows.py), recorded with the model: the filter reads as
    # many, and the threshold and the test figures are computed on as many.
    max_windows: int = MAX_WINDOWS
    # The log-odds a message's highest window loses per ln(windows read) (windows.combine),
    # recorded with the model: the filter, the threshold and the test figures all use it.
    window_discount: float = WINDOW_DISCOUNT
    # Runs trained from different initial weights (seed, seed + 1000, ...) and read as one model,
    # their log-odds averaged (model.SpamEnsemble): each costs a run of training and of reading.
    members: int = 1
    out: Path = Path("model")
    device: str = "cpu"
    quantize: str | None = "int8"  # also write model.int8.onnx (the default variant where it agrees)
    resume: bool = False  # continue from the state saved after the last finished epoch

    @property
    def data_recipe(self) -> DataRecipe:
        """The recipe of these options' data: mail with --spam/--ham, else labelled."""
        return MAIL_RECIPE if self.spam else LABELLED_RECIPE


# adapt.py: next-token pretraining on the user's own mail before train --weights.
@dataclass
class AdaptOptions:
    mail: list[Path]  # mail sources, any format ``train --spam/--ham`` reads; labels not needed
    out: Path
    # As ``train`` takes them: ``model`` a size name or a config.json (the shape), ``weights`` a
    # checkpoint folder or .safetensors file, a hub size name (None: ``model``'s hub weights), or
    # "random" for a random initialisation of ``model``'s shape (seeded as ``train`` seeds it).
    model: str | None = None
    weights: str | None = None
    steps: int = 2000
    context: int = MAIL_MAX_LENGTH  # tokens per window: the mail recipe's, whose positions it trains
    batch_size: int = 4
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: int = 100  # steps of linear warm-up, then a cosine decay to a tenth of lr
    held_out: float = 0.05  # share of the messages held out for the language-model loss
    save_every: int = 100  # steps between saved states (and held-out measurements)
    held_out_windows: int = 128  # windows of the held-out stream measured (all of it if fewer)
    seed: int = 123
    device: str = "cpu"
    resume: bool = False
    attention_window: int | None = None  # N, or 0 for every earlier position; None: the shape's own
