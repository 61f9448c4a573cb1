"""Knowledge distillation's loss (Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network").

    loss = (1 - A) CE(labels, student) + A T² KL(softmax(teacher / T) || softmax(student / T))

The T² keeps the soft term's gradients on the scale of the hard term's as T changes (the paper's section 2); the
KL differs from the paper's soft cross-entropy by the teacher's entropy, a constant, so the gradients are the same
and the loss is 0 when the student matches the teacher.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from research.objectives.classification import softmax_cross_entropy


def soft_kl(teacher_logits: jax.Array, student_logits: jax.Array, temperature: float) -> jax.Array:
    """Mean over examples of KL(softmax(teacher / T) || softmax(student / T)), nats."""
    log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, temperature: float,
                      weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, {"hard_ce", "soft_kl"}) for integer `labels`; the teacher's logits get no gradient."""
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
    ce = softmax_cross_entropy(student_logits, labels)
    kl = soft_kl(teacher_logits, student_logits, temperature)
    loss = (1.0 - weight) * ce + weight * temperature ** 2 * kl
    return loss, {"hard_ce": ce, "soft_kl": kl}
