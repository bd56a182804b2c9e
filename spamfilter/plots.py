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
    save_png(figure, path)
    plt.close(figure)


def plot_roc(
    fpr: Any, tpr: Any, auc: float, threshold: float, point: tuple[float, float], path: Path
) -> None:
    """ROC curve with the operating point of the model's threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot(fpr, tpr, label=f"ROC (AUC {auc:.4f})")
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axis.plot([point[0]], [point[1]], marker="o", label=f"threshold {threshold:.3f}")
    axis.set_xlabel("false-positive rate (ham marked as spam)")
    axis.set_ylabel("recall (spam caught)")
    axis.set_title("ROC")
    axis.legend(loc="lower right")
    figure.tight_layout()
    save_png(figure, path)
    plt.close(figure)


def save_png(figure: Any, path: Path) -> None:
    """The figure as a PNG at ``path``, drawn in memory, then replaced whole (never written through a
    link there; a write that fails, a full disk, raises ``OSError``)."""
    import io

    from .replacefile import replace_file

    image = io.BytesIO()
    figure.savefig(image, dpi=100, format="png")
    replace_file(path, image.getvalue())
