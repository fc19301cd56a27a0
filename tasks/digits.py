"""Classifiers on the bundled digits: an MLP and a small CNN."""

from __future__ import annotations

from collections.abc import Sequence

from metaopt.tasks import validate
from metaopt.tasks.base import Task
from metaopt.tasks.classification import classification_task
from metaopt.tasks.data.arrays import ArrayDataset
from metaopt.tasks.data.digits import load_digits
from metaopt.tasks.models import ACTIVATIONS, CNN, MLP


def mlp_classifier(
    data: ArrayDataset | None = None,
    hidden: Sequence[int] = (32,),
    batch_size: int = 128,
    activation: str = "relu",
) -> Task:
    """An MLP classifier; the default is the digits MLP 64-32-10 (input 64, hidden 32)."""
    data = load_digits() if data is None else data
    hidden = validate.positive_ints("hidden", hidden)
    validate.one_of("activation", activation, ACTIVATIONS)
    model = MLP(hidden=hidden, out=data.num_classes, activation=ACTIVATIONS[activation])
    widths = "-".join(str(w) for w in (_flat(data.example_shape), *hidden, data.num_classes))
    return classification_task(model, data, batch_size, name=f"{data.name}_mlp_{widths}")


def cnn_classifier(
    data: ArrayDataset | None = None,
    channels: Sequence[int] = (16, 32),
    batch_size: int = 128,
) -> Task:
    """A small CNN (3x3 convs, stride 2 after the first, mean pool, linear head)."""
    data = load_digits() if data is None else data
    channels = validate.positive_ints("channels", channels)
    model = CNN(channels=channels, out=data.num_classes)
    return classification_task(model, data, batch_size, name=f"{data.name}_cnn")


def _flat(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
