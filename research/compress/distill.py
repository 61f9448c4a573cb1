"""The frozen teacher of knowledge distillation (`--distill_from=TEACHER_WORKDIR`; research/objectives/distillation.py).

The teacher is rebuilt from its own workdir, as any tool reads a finished run: its family and config from its
config.json (`research.families.load_run`), its latest checkpoint (`research.loop.restore_latest`; replica 0 of a
--num_seeds run). Its parameters are closed over by the function returned here, so they are constants of the
student's compiled step: never a part of the student's train state, never written into the student's checkpoints,
never updated. A teacher of other data (another dataset, other classes or input shapes) is refused with one line.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.sharding import Mesh

from research import families
from research.compress.config import DistillConfig
from research.data import Dataset
from research.errors import ConfigError
from research.loop import restore_latest
from research.tasks.supervised import SupervisedTask
from research.workdir import Workdir


def load_teacher(cfg: DistillConfig, dataset: Dataset, mesh: Mesh | None = None
                 ) -> Callable[[jax.Array], jax.Array]:
    """x -> the teacher's logits (inference mode, float32) for the student training on `dataset`."""
    workdir = Workdir(cfg.teacher)
    if not workdir.path.is_dir():
        raise ConfigError(f"--distill_from={cfg.teacher}: no such directory (a trained classifier's workdir)")
    module, tcfg = families.load_run(workdir)
    if not workdir.has_checkpoints():
        raise ConfigError(f"--distill_from={cfg.teacher} has no checkpoint: train the teacher first")
    run = module.build(tcfg, mesh, evaluate=False)
    task = run.task
    if not isinstance(task, SupervisedTask) or task.cfg.kind != "classify":
        raise ConfigError(f"--distill_from={cfg.teacher} holds a {module.FAMILY} run, not a classifier")
    mine = (dataset.name, dataset.num_classes, tuple(dataset.input_shape))
    theirs = (run.dataset.name, run.dataset.num_classes, tuple(run.dataset.input_shape))
    if mine != theirs:
        raise ConfigError(f"--distill_from={cfg.teacher}: the teacher learned {theirs[0]} ({theirs[1]} classes, "
                          f"inputs {theirs[2]}), this run {mine[0]} ({mine[1]} classes, inputs {mine[2]})")
    state, _ = restore_latest(task, workdir, tcfg.loop.seed, mesh, tcfg.loop)
    predict = task.predict
    return lambda x: jax.lax.stop_gradient(predict(state, x))
