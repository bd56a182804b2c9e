"""The model recipe (modeldir.ModelRecipe): read from every manifest, old ones included, and what the
runtime reads a text by (the command line's defaults: test_cli_defaults.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from spamfilter.mail.text import MESSAGE_BYTES_READ, TEXT_CHARS_READ
from spamfilter.modeldir import Manifest, ModelRecipe, chars_kept, open_model_directory

# A manifest as spamfilter wrote it before windows and calibration were recorded: pooling and
# max_length also inside "recipe", no max_windows, no target_fpr.
OLD_MANIFEST = {
    "format_version": 1,
    "labels": ["not spam", "spam"],
    "max_length": 120,
    "pad_token_id": 50256,
    "pooling": "last",
    "threshold": 0.5,
    "recipe": {"epochs": 5, "pooling": "last", "max_length": 120, "data": "SMSSpamCollection"},
}


def test_an_old_manifest_reads_as_one_window_without_a_target() -> None:
    recipe = Manifest.from_dict(OLD_MANIFEST, Path("spamfilter.json")).model_recipe
    assert recipe == ModelRecipe(max_length=120, pad_token_id=50256, pooling="last", max_windows=1)
    assert (recipe.message_bytes, recipe.text_chars) == (MESSAGE_BYTES_READ, TEXT_CHARS_READ)
    assert recipe.chars_kept == TEXT_CHARS_READ  # 64 characters a token is below the text cap here


def test_a_recorded_window_count_and_target_are_read() -> None:
    data = json.loads(json.dumps(OLD_MANIFEST))
    data["recipe"] |= {"max_windows": 4, "target_fpr": 0.001}
    data["max_length"] = 512
    recipe = Manifest.from_dict(data, Path("spamfilter.json")).model_recipe
    assert (recipe.max_windows, recipe.target_fpr, recipe.max_length) == (4, 0.001, 512)
    assert recipe.chars_kept == chars_kept(512) == 64 * 512


def test_a_trained_model_stores_each_value_once(trained_model: Path) -> None:
    manifest = json.loads((trained_model / "spamfilter.json").read_text())
    if not os.environ.get("SPAMFILTER_TEST_MODEL") or os.environ.get("CI"):
        # A model reused from an earlier run (development only, see conftest) may predate this.
        assert "max_length" not in manifest["recipe"] and "pooling" not in manifest["recipe"]
    recipe = open_model_directory(trained_model).recipe
    assert recipe.max_length == manifest["max_length"] and recipe.pooling == manifest["pooling"]
    assert recipe.max_windows == manifest["recipe"]["max_windows"]


def test_the_classifier_reads_the_text_cap_and_windows_from_its_recipe(trained_model: Path) -> None:
    from spamfilter.runtime import Classifier

    classifier = Classifier.load(trained_model, variant="fp32")
    assert classifier.recipe == open_model_directory(trained_model).recipe
    cap = classifier.recipe.chars_kept
    text = "Re: lunch\n" + "see you at noon in the usual place. " * (cap // 30)
    assert len(text) > cap
    # What lies past the cap is never read: a spam appended there changes nothing.
    beyond = f"{text}\n\nWIN a FREE prize now! Call 0800 123 to claim your cash"
    assert classifier.spam_probability([beyond])[0] == classifier.spam_probability([text[:cap]])[0]
    # One window instead of the recorded ones: the classifier's recipe changes, the model's stays.
    classifier.max_windows = 1
    assert classifier.recipe.max_windows == 1
    assert open_model_directory(trained_model).recipe.max_windows == classifier.directory.recipe.max_windows
