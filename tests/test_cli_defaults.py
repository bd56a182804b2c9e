"""The command line's defaults are the library's: every option of ``train`` named like a field of
``TrainingConfig`` or ``TrainOptions`` has that field's default, and the help's quoted defaults are
the data recipes'. Torch-free: the defaults are declared in ``spamfilter.train_options``."""

from __future__ import annotations

import dataclasses

import click
from click.testing import CliRunner

from spamfilter.cli import cli
from spamfilter.train_options import LABELLED_RECIPE, MAIL_RECIPE, TrainingConfig, TrainOptions

# Options whose command-line default differs from the dataclass's on purpose, and why.
DELIBERATE = {
    "device": "the command line resolves 'auto' to a device; the library takes a device name",
    "out": "the command line's None is train_output_dir() ($SPAMFILTER_MODEL or the user data folder)",
}
# What the command line shows for a library value where the two differ in type.
SHOWN = {("quantize", None): "none"}


def _defaults(cls: type) -> dict[str, object]:
    return {
        field.name: field.default
        for field in dataclasses.fields(cls)
        if field.default is not dataclasses.MISSING  # a default_factory (lists, the config) has no option
    }


def _train_command() -> click.Command:
    command = cli.get_command(click.Context(cli), "train")
    assert command is not None
    return command


def test_every_train_option_named_like_a_library_field_has_its_default() -> None:
    library = _defaults(TrainingConfig) | _defaults(TrainOptions)
    compared = set()
    command = _train_command()
    context = click.Context(command)
    for param in command.params:
        if param.name in library and param.name not in DELIBERATE:
            expected = library[param.name]
            assert param.get_default(context) == SHOWN.get((param.name, expected), expected), param.name
            compared.add(param.name)
    # The matching by name must find the options at all, or this test would pass on nothing.
    assert {"epochs", "batch_size", "lr", "weight_decay", "seed", "trainable", "pooling"} <= compared
    assert {"max_length", "balance", "keep_best", "augment", "target_fpr", "quantize", "resume"} <= compared


def test_train_help_quotes_the_data_recipes() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"Default: {MAIL_RECIPE.max_length} for --spam/--ham" in text
    assert f"[default: {MAIL_RECIPE.balance} for --spam/--ham, else {LABELLED_RECIPE.balance}]" in text
    assert f"[default: {MAIL_RECIPE.target_fpr} for --spam/--ham" in text
    assert "[default: keep-best for --spam/--ham]" in text and MAIL_RECIPE.keep_best
    assert "[default: no-augment]" in text and not (MAIL_RECIPE.augment or LABELLED_RECIPE.augment)
    assert f"[default: {TrainingConfig.epochs}; x>=1]" in text
    assert f"[default: {TrainOptions.pooling}]" in text


def test_options_several_commands_take_have_the_library_defaults() -> None:
    from spamfilter.verdict import DEFAULT_PREFIX, EXPLAIN_POLICIES, Decision

    seen: dict[str, set[str]] = {}
    for name in cli.list_commands(click.Context(cli)):
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        context = click.Context(command)
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            if "--header-prefix" in param.opts:
                assert param.get_default(context) == DEFAULT_PREFIX, name
            if "--explain" in param.opts and isinstance(param.type, click.Choice):
                assert tuple(param.type.choices) == EXPLAIN_POLICIES, name
                assert param.get_default(context) == Decision.explain, name
            if "--threshold" in param.opts:
                assert param.get_default(context) is None, name  # None: the model's own
            seen.setdefault(param.opts[-1], set()).add(name)
    assert {"filter", "serve"} <= seen["--header-prefix"] and {"filter", "serve"} <= seen["--explain"]
    assert {"classify", "eval", "filter", "serve"} <= seen["--threshold"]
