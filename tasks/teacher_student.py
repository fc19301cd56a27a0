"""Teacher-student regression: a student MLP fits a random teacher MLP from noisy samples.

A task is one teacher ``f_T`` (its weights are the family's config). Data are generated:

    x ~ N(0, I_d),   y = f_T(x) + noise_std * eps,   eps ~ N(0, I_k),

and the student ``f_w`` (an MLP of its own widths, same activation) minimises the mean squared
error ``L(w) = 1/(B k) sum_{b, j} (f_w(x_b)_j - y_{b, j})^2``. A batch is
``{"x": [B, d], "y": [B, k]}``. The Bayes risk is ``noise_std^2``: a student with the teacher's
shape reaches it exactly at the teacher's weights. Teachers are ``tasks.models.MLP`` with the
default (LeCun-normal, zero-bias) init times ``teacher_init_scale``. Each split draws from its
own key stream (the key is folded with the split's index), so one key gives independent
train / valid / test samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.base import SPLITS, Task, TaskFamily, check_split
from metaopt.tasks.models import ACTIVATIONS, MLP


def teacher_student_family(
    input_dim: int = 8,
    teacher_hidden: Sequence[int] = (16,),
    student_hidden: Sequence[int] = (32,),
    output_dim: int = 1,
    batch_size: int = 128,
    noise_std: float = 0.1,
    activation: str = "tanh",
    teacher_init_scale: float = 1.0,
) -> TaskFamily:
    """Random teachers of widths ``input_dim-teacher_hidden-output_dim``; students likewise.

    ``sample(key)`` returns the teacher's flax params (a pytree of arrays) and ``task(cfg)`` the
    regression :class:`~tasks.base.Task` of that teacher.
    """
    validate.positive_int("input_dim", input_dim)
    teacher_hidden = validate.positive_ints("teacher_hidden", teacher_hidden)
    student_hidden = validate.positive_ints("student_hidden", student_hidden)
    validate.positive_int("output_dim", output_dim)
    validate.positive_int("batch_size", batch_size)
    validate.in_range("noise_std", noise_std, 0.0, math.inf)
    validate.one_of("activation", activation, ACTIVATIONS)
    validate.positive_float("teacher_init_scale", teacher_init_scale)
    act = ACTIVATIONS[activation]
    teacher = MLP(teacher_hidden, output_dim, act, teacher_init_scale)
    student = MLP(student_hidden, output_dim, act)
    example = jnp.zeros((1, input_dim), jnp.float32)
    name = "teacher_student_" + "-".join(str(w) for w in (input_dim, *teacher_hidden, output_dim))

    def sample(key):
        return teacher.init(key, example)["params"]

    def task(cfg) -> Task:
        def init(key):
            return student.init(key, example)["params"]

        def batch(key, split):
            key = jax.random.fold_in(key, SPLITS.index(check_split(split)))
            k_x, k_eps = jax.random.split(key)
            x = jax.random.normal(k_x, (batch_size, input_dim))
            eps = jax.random.normal(k_eps, (batch_size, output_dim))
            return {"x": x, "y": teacher.apply({"params": cfg}, x) + noise_std * eps}

        def loss(params, b, hparams=None):
            return jnp.mean(jnp.square(student.apply({"params": params}, b["x"]) - b["y"]))

        return Task(init=init, loss=loss, batch=batch, name=name)

    return TaskFamily(sample=sample, task=task, name=name)
