"""Inner tasks and task families (see tasks/base.py for the contract)."""

from tasks.base import SPLITS, Task, TaskFamily, as_family, single_task_family
from tasks.classification import classification_task, evaluate
from tasks.data import ArrayDataset, load_digits
from tasks.digits import cnn_classifier, mlp_classifier
from tasks.mlp_family import ConfigMLP, MLPFamilyConfig, mlp_family, noisy_labels
from tasks.nqm import NQMConfig, noise_floor, nqm, nqm_config, nqm_expected_loss, nqm_task
from tasks.quadratic import QuadraticConfig, quadratic_family, quadratic_task
from tasks.registry import make, names
from tasks.teacher_student import teacher_student_family

__all__ = [
    "SPLITS",
    "ArrayDataset",
    "ConfigMLP",
    "MLPFamilyConfig",
    "NQMConfig",
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
