"""Inner tasks and task families (see tasks/base.py for the contract)."""

from metaopt.tasks.augment import AugmentConfig, augment_scales, rescaled_task
from metaopt.tasks.autoencoder_family import AutoencoderConfig, autoencoder_family
from metaopt.tasks.base import SPLITS, Task, TaskFamily, as_family, as_task, single_task_family
from metaopt.tasks.classification import classification_task, evaluate
from metaopt.tasks.cnn_family import ConfigCNN, cnn_family
from metaopt.tasks.data import ArrayDataset, load_digits
from metaopt.tasks.digits import cnn_classifier, mlp_classifier
from metaopt.tasks.family_common import ClassifierConfig, noisy_labels
from metaopt.tasks.gp_functions import GPFunctionConfig, gp_functions, gp_value
from metaopt.tasks.least_squares import LeastSquaresConfig, least_squares_family, least_squares_task
from metaopt.tasks.logistic_family import LogisticConfig, logistic_family
from metaopt.tasks.mlp_family import ConfigMLP, MLPFamilyConfig, mlp_family
from metaopt.tasks.nqm import NQMConfig, noise_floor, nqm, nqm_config, nqm_expected_loss, nqm_task
from metaopt.tasks.quadratic import QuadraticConfig, quadratic_family, quadratic_task
from metaopt.tasks.registry import REGISTRY, make, names
from metaopt.tasks.sequence_family import SequenceConfig, markov_sequences, sequence_family
from metaopt.tasks.teacher_student import teacher_student_family

__all__ = [
    "REGISTRY",
    "SPLITS",
    "ArrayDataset",
    "AugmentConfig",
    "AutoencoderConfig",
    "ClassifierConfig",
    "ConfigCNN",
    "ConfigMLP",
    "GPFunctionConfig",
    "LeastSquaresConfig",
    "LogisticConfig",
    "MLPFamilyConfig",
    "NQMConfig",
    "QuadraticConfig",
    "SequenceConfig",
    "Task",
    "TaskFamily",
    "as_family",
    "as_task",
    "augment_scales",
    "autoencoder_family",
    "classification_task",
    "cnn_classifier",
    "cnn_family",
    "evaluate",
    "gp_functions",
    "gp_value",
    "least_squares_family",
    "least_squares_task",
    "load_digits",
    "logistic_family",
    "make",
    "markov_sequences",
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
    "rescaled_task",
    "sequence_family",
    "single_task_family",
    "teacher_student_family",
]
