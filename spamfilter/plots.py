"""PNG plots of training (loss and accuracy curves, as in the reference tutorial)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_training(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    points = record.get("eval_points", [])
    if points:
        seen = [p["examples_seen"] for p in points]
        loss_axis.plot(seen, [p["train_loss"] for p in points], label="training loss")
        loss_axis.plot(seen, [p["validation_loss"] for p in points], linestyle="-.", label="validation loss")
        loss_axis.legend()
    loss_axis.set_xlabel("examples seen")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("Loss")
    epochs = record.get("epochs", [])
    numbers = [e["epoch"] for e in epochs]
    accuracy_axis.plot(numbers, [e["train_accuracy"] for e in epochs], marker="o", label="training accuracy")
    accuracy_axis.plot(
        numbers,
        [e["validation_accuracy"] for e in epochs],
        marker="o",
        linestyle="-.",
        label="validation accuracy",
    )
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.set_title("Accuracy")
    accuracy_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
