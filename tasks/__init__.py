"""Inner tasks and task families (see tasks/base.py for the contract)."""

from tasks.base import SPLITS, Task, TaskFamily, as_family, single_task_family
from tasks.classification import classification_task, evaluate
from tasks.data import ArrayDataset, load_digits
from tasks.digits import cnn_classifier, mlp_classifier
from tasks.quadratic import QuadraticConfig, quadratic_family, quadratic_task
from tasks.registry import make, names

__all__ = [
    "SPLITS",
    "ArrayDataset",
    "QuadraticConfig",
    "Task",
    "TaskFamily",
    "as_family",
    "classification_task",
    "cnn_classifier",
    "evaluate",
    "load_digits",
    "make",
    "mlp_classifier",
    "names",
    "quadratic_family",
    "quadratic_task",
    "single_task_family",
]
