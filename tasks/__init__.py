"""Inner tasks and task families (see tasks/base.py for the contract)."""

from metaopt.tasks.base import SPLITS, Task, TaskFamily, as_family, as_task, single_task_family
from metaopt.tasks.classification import classification_task, evaluate
from metaopt.tasks.data import ArrayDataset, load_digits
from metaopt.tasks.digits import cnn_classifier, mlp_classifier
from metaopt.tasks.mlp_family import ConfigMLP, MLPFamilyConfig, mlp_family, noisy_labels
from metaopt.tasks.nqm import NQMConfig, noise_floor, nqm, nqm_config, nqm_expected_loss, nqm_task
from metaopt.tasks.quadratic import QuadraticConfig, quadratic_family, quadratic_task
from metaopt.tasks.registry import REGISTRY, make, names
from metaopt.tasks.teacher_student import teacher_student_family

__all__ = [
    "REGISTRY",
    "SPLITS",
    "ArrayDataset",
    "ConfigMLP",
    "MLPFamilyConfig",
    "NQMConfig",
    "QuadraticConfig",
    "Task",
    "TaskFamily",
    "as_family",
    "as_task",
    "classification_task",
    "cnn_classifier",
    "evaluate",
    "load_digits",
    "make",
    "mlp_classifier",
    "mlp_family",
    "names",
    "noise_floor",
    "noisy_labels",
    "nqm",
    "nqm_config",
    "nqm_expected_loss",
    "nqm_task",
    "quadratic_family",
    "quadratic_task",
    "single_task_family",
    "teacher_student_family",
]
