"""The sequence family: GRU / LSTM models on the adding and copy problems, MNIST-1D, sequential MNIST and
forecasting (the supervised task with a recurrent model), and a character language model (truncated BPTT)."""

from __future__ import annotations

import dataclasses

from jax.sharding import Mesh

from research.compress.config import QuantConfig
from research.data import DataConfig
from research.data.text import char_corpus
from research.errors import ConfigError
from research.evaluators.ema import with_ema
from research.evaluators.language_model import LanguageModelEvaluator
from research.evaluators.sparsity import sparsity_evaluators
from research.evaluators.supervised import SupervisedEvaluator
from research.families import Run
from research.families.mlp import eval_batch_size
from research.loop import LoopConfig
from research.models.rnn import CELLS, RECURRENT_INITS, CharLM, SequenceModel
from research.optim import OptimizerConfig
from research.parallel import check_divisible
from research.tasks.char_lm import CharLMTask
from research.tasks.supervised import SupervisedConfig, SupervisedTask

FAMILY = "rnn"
TASKS = ("adding", "copy", "mnist1d", "seq_mnist", "char_lm", "forecast")
DATASET = {"adding": "adding", "copy": "copy", "mnist1d": "mnist1d", "seq_mnist": "seq_mnist",
           "forecast": "forecast"}  # the dataset of each supervised task (char_lm reads --dataset)
HAS_LENGTH = ("adding", "copy", "forecast")
PER_STEP = ("copy", "forecast")
REGRESSION = ("adding", "forecast")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    cell: str = "lstm"
    hidden: int = 128                  # units per layer (and direction)
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0               # between stacked layers
    recurrent_init: str = "orthogonal"
    forget_bias: float = 1.0
    head: str = "last"                 # last | flatten (adding, mnist1d, seq_mnist)
    embed: int = 64                    # char_lm: character embedding width

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"unknown --cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.recurrent_init not in RECURRENT_INITS:
            raise ConfigError(f"unknown --recurrent_init {self.recurrent_init!r}")
        if self.hidden < 1 or self.layers < 1 or self.embed < 1:
            raise ConfigError(f"--hidden ({self.hidden}), --layers ({self.layers}) and --embed ({self.embed}) must "
                              f"be positive")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.dropout and self.layers < 2:
            raise ConfigError("--dropout acts between stacked layers: it needs --layers >= 2")
        if self.head not in ("last", "flatten"):
            raise ConfigError(f"unknown --head {self.head!r}; choose last or flatten")


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig                   # char_lm: the corpus; otherwise the task's own dataset (DATASET)
    loop: LoopConfig
    optimizer: OptimizerConfig
    task: str = "adding"
    model: ModelConfig = ModelConfig()
    length: int = 100                  # adding / forecast: T; copy: the delay T (T + 20 steps)
    eval_batch_size: int = 0           # 0: automatic (char_lm: the batch size)
    unroll: int = 100                  # char_lm: characters per stream and batch (BPTT truncation)
    max_eval_chars: int = 0            # char_lm: validate on at most this many characters (0: all)
    sample_chars: int = 200            # char_lm: characters sampled at each evaluation (0: none)
    prompt: str = "\n"                 # char_lm: the text samples continue
    temperature: float = 0.8           # char_lm: sampling temperature (0: the most likely character)
    quant: QuantConfig = QuantConfig()  # --qat=int8 (research/compress/quantize.py)

    def __post_init__(self) -> None:
        self.quant.only_qat("rnn")
        if self.task not in TASKS:
            raise ConfigError(f"unknown --task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task != "char_lm" and self.data.name != DATASET[self.task]:
            raise ConfigError(f"--task={self.task} trains on {DATASET[self.task]!r}, not {self.data.name!r}")
        if self.task in HAS_LENGTH and self.length < 2:
            raise ConfigError(f"--length must be >= 2, got {self.length}")
        if self.eval_batch_size < 0:
            raise ConfigError(f"--eval_batch_size must be >= 0, got {self.eval_batch_size}")
        if self.task == "char_lm":
            if self.model.bidirectional:
                raise ConfigError("--bidirectional does not apply to char_lm (the model reads left to right)")
            if self.unroll < 1:
                raise ConfigError(f"--unroll must be positive, got {self.unroll}")
            if self.max_eval_chars < 0 or self.sample_chars < 0:
                raise ConfigError("--max_eval_chars and --sample_chars must be >= 0")
            if not self.temperature >= 0:
                raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
            if self.sample_chars and not self.prompt:
                raise ConfigError("--prompt must hold at least one character")

    @property
    def eval_batch(self) -> int:
        if self.task == "char_lm":
            return self.eval_batch_size or self.data.batch_size
        return eval_batch_size(self.eval_batch_size, self.data.batch_size)


def build(cfg: Config, mesh: Mesh | None = None, *, evaluate: bool = True) -> Run:
    if mesh is not None:
        check_divisible(cfg.data.batch_size, mesh)
        check_divisible(cfg.eval_batch, mesh, "--eval_batch_size")
    m = cfg.model
    if cfg.task == "char_lm":
        corpus = char_corpus(cfg.data.load())
        model = CharLM(vocab_size=len(corpus.info["vocab"]), embed=m.embed, cell=m.cell, hidden=m.hidden,
                       layers=m.layers, dropout=m.dropout, recurrent_init=m.recurrent_init, forget_bias=m.forget_bias)
        model = _qat(model, cfg.quant)
        task = CharLMTask(model, corpus, cfg.optimizer, batch_size=cfg.data.batch_size, unroll=cfg.unroll,
                          steps=cfg.loop.steps, ema_decay=cfg.loop.ema_decay)
        evaluators = with_ema([LanguageModelEvaluator(task, corpus, batch_size=cfg.eval_batch,
                                                      max_chars=cfg.max_eval_chars, sample_chars=cfg.sample_chars,
                                                      prompt=cfg.prompt, temperature=cfg.temperature)],
                              cfg.loop.ema_decay) if evaluate else []
        evaluators += sparsity_evaluators(cfg.optimizer, task.params) if evaluate else []  # --prune_sparsity
        return Run(task, evaluators, corpus)
    dataset = cfg.data.load(**({"length": cfg.length} if cfg.task in HAS_LENGTH else {}))
    kind = "regress" if cfg.task in REGRESSION else "classify"
    per_step = cfg.task in PER_STEP
    model = SequenceModel(out_dim=1 if kind == "regress" else dataset.num_classes,
                          head="per_step" if per_step else m.head, cell=m.cell, hidden=m.hidden, layers=m.layers,
                          bidirectional=m.bidirectional, dropout=m.dropout, recurrent_init=m.recurrent_init,
                          forget_bias=m.forget_bias)
    model = _qat(model, cfg.quant)
    task = SupervisedTask(model, dataset, cfg.optimizer, SupervisedConfig(kind), batch_size=cfg.data.batch_size,
                          steps=cfg.loop.steps, ema_decay=cfg.loop.ema_decay)  # --augment: refused by the data
    evaluators = with_ema([SupervisedEvaluator(task.predict, dataset, kind, cfg.eval_batch, per_step=per_step)],
                          cfg.loop.ema_decay) if evaluate else []
    evaluators += sparsity_evaluators(cfg.optimizer, task.params) if evaluate else []  # --prune_sparsity
    return Run(task, evaluators, dataset)


def _qat(model, quant: QuantConfig):
    """`model` fake-quantised for --qat=int8 (qwix intercepts the cells' matmuls), else itself."""
    if not quant.qat:
        return model
    from research.compress.quantize import wrap

    return wrap(model, quant)
