"""Learned black-box optimization (Chen et al. 2017, "Learning to learn without gradient
descent by gradient descent"): an LSTM proposes queries from the history of ``(x, f(x))``.

* :func:`rnn_policy` -- the LSTM query policy (:class:`QueryPolicy`), on ``[0, 1]^d``;
* :func:`rollout`, :func:`meta_loss` (``"sum"``, ``"oi"``), :func:`best_so_far`;
* :func:`blackbox_backprop` -- its meta-gradient estimator (an :class:`metaopt.Estimator`, for
  :func:`metaopt.outer_trainer`) on a task family such as :func:`metaopt.tasks.gp_functions`;
* baselines: :func:`random_search`, :func:`gp_ei` (scikit-learn GP + expected improvement).
"""

from metaopt.blackbox.baselines import expected_improvement, gp_ei, random_search
from metaopt.blackbox.estimator import blackbox_backprop
from metaopt.blackbox.policy import QueryPolicy, rnn_policy
from metaopt.blackbox.rollout import LOSSES, best_so_far, meta_loss, rollout

__all__ = [
    "LOSSES",
    "QueryPolicy",
    "best_so_far",
    "blackbox_backprop",
    "expected_improvement",
    "gp_ei",
    "meta_loss",
    "random_search",
    "rnn_policy",
    "rollout",
]
