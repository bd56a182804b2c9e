"""The command line's defaults are the library's: every option of ``train`` named like a field of
``TrainingConfig`` or ``TrainOptions`` has that field's default, and the help's quoted defaults are
the data recipes'; ``adapt``'s are ``AdaptOptions``', ``serve``'s ``ServiceSettings``' and
``UserLimits``'. Torch-free: the defaults are declared in ``spamfilter.train_options`` and
``spamfilter.service.settings``."""

from __future__ import annotations

import dataclasses

import click
from click.testing import CliRunner

from spamfilter.cli import cli
from spamfilter.service.settings import GPU_BATCH_MAX, TELL_QUOTA, ServiceSettings, UserLimits
from spamfilter.train_options import LABELLED_RECIPE, MAIL_RECIPE, AdaptOptions, TrainingConfig, TrainOptions

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


def _command(name: str) -> click.Command:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    return command


def test_every_train_option_named_like_a_library_field_has_its_default() -> None:
    library = _defaults(TrainingConfig) | _defaults(TrainOptions)
    compared = set()
    command = _command("train")
    context = click.Context(command)
    for param in command.params:
        if param.name in library and param.name not in DELIBERATE:
            expected = library[param.name]
            assert param.get_default(context) == SHOWN.get((param.name, expected), expected), param.name
            compared.add(param.name)
    # The matching by name must find the options at all, or this test would pass on nothing.
    assert {"epochs", "batch_size", "lr", "weight_decay", "seed", "trainable", "pooling"} <= compared
    assert {"max_length", "balance", "keep_best", "augment", "target_fpr", "quantize", "resume"} <= compared
    assert {"link_copies", "interleave", "adapt_steps", "weight_average"} <= compared


def test_train_help_quotes_the_data_recipes() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"Default: {MAIL_RECIPE.max_length} for --spam/--ham" in text
    assert f"[default: {MAIL_RECIPE.balance} for --spam/--ham, else {LABELLED_RECIPE.balance}]" in text
    assert f"[default: {MAIL_RECIPE.target_fpr} for --spam/--ham" in text
    assert "[default: keep-best for --spam/--ham]" in text and MAIL_RECIPE.keep_best
    assert "[default: no-augment]" in text and not (MAIL_RECIPE.augment or LABELLED_RECIPE.augment)
    assert "[default: no-link-copies]" in text and not (
        MAIL_RECIPE.link_copies or LABELLED_RECIPE.link_copies
    )
    adapt = next(param for param in _command("train").params if param.name == "adapt_steps")
    assert isinstance(adapt, click.Option) and adapt.help is not None
    assert adapt.help.endswith(f"[default: {MAIL_RECIPE.adapt_steps}]") and MAIL_RECIPE.adapt_steps == 0
    assert LABELLED_RECIPE.adapt_steps == MAIL_RECIPE.adapt_steps  # else the help names both
    assert (
        f"[default: {MAIL_RECIPE.weight_average:g} for --spam/--ham, else {LABELLED_RECIPE.weight_average:g}]"
        in text
    )
    assert MAIL_RECIPE.weight_average > 0 == LABELLED_RECIPE.weight_average  # the seed recipe stays exact
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


def test_every_adapt_option_named_like_a_library_field_has_its_default() -> None:
    library = _defaults(AdaptOptions)
    command = _command("adapt")
    context = click.Context(command)
    compared = set()
    for param in command.params:
        if param.name in library:
            assert param.get_default(context) == library[param.name], param.name
            compared.add(param.name)
    assert {"steps", "context", "batch_size", "lr", "seed", "model", "weights", "resume"} <= compared


# serve's options whose default differs from the settings' field of that name on purpose, and why.
SERVE_DELIBERATE = {
    "learn_after": "the settings' 0 (TELL never retrains) is the library's; serve's 50 is --allow-tell's",
    "max_per_peer": "serve's None is the settings' 0: three quarters of --max-connections",
    "batch_max": "serve's None is the settings' batch_max, or GPU_BATCH_MAX with --gpu",
}


def test_every_serve_option_has_the_service_settings_default() -> None:
    from spamfilter.service.milter import MilterPolicy

    library = _defaults(ServiceSettings) | _defaults(UserLimits)
    # Options named otherwise than their field (or in other units).
    library |= {
        "batch_wait_ms": ServiceSettings.batch_wait * 1000,
        "tell_max": TELL_QUOTA.count,
        "tell_max_bytes": TELL_QUOTA.bytes,
        "max_loaded_heads": UserLimits.max_loaded,
        "max_user_corrections": UserLimits.max_corrections,
        "max_user_correction_bytes": UserLimits.max_correction_bytes,
        "milter_error": MilterPolicy.on_error,
    }
    compared = set()
    command = _command("serve")
    context = click.Context(command)
    for param in command.params:
        if param.name in library and param.name not in SERVE_DELIBERATE:
            assert param.get_default(context) == library[param.name], param.name
            compared.add(param.name)
    assert {"max_size", "timeout", "max_connections", "batch_wait_ms", "log_interval"} <= compared
    assert {"tell_max", "tell_max_bytes", "milter_error"} <= compared
    assert {"max_users", "max_loaded_heads", "max_user_corrections", "max_user_correction_bytes"} <= compared
    assert {"max_retrains", "retrain_queue", "retrain_interval"} <= compared


def test_serve_help_quotes_the_batch_defaults() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"Default: {ServiceSettings.batch_max}, with --gpu {GPU_BATCH_MAX}." in text
