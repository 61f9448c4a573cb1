"""GRU / LSTM sequence models: the adding and copy problems, MNIST-1D, sequential MNIST, forecasting and a
character language model.

    python -m launch.rnn --flagfile=experiments/rnn/quickstart.flags --workdir=/tmp/runs/rnn_quick
    python -m launch.rnn --flagfile=experiments/rnn/char_lm_lstm.flags --workdir=/tmp/runs/char_lm
    python -m launch.rnn --mode=sample --workdir=/tmp/runs/char_lm --prompt=ROMEO: --num_chars=500 \
        --temperature=0.8
"""

import json
import os

from absl import flags

from launch import common

FLAGS = flags.FLAGS
TASKS = ("adding", "copy", "mnist1d", "seq_mnist", "char_lm", "forecast")
flags.DEFINE_enum("task", "adding", TASKS, "Which sequence task.")
flags.DEFINE_enum("mode", "train", ["train", "sample"], "train, or (char_lm) print a sample from the latest "
                  "checkpoint of --workdir.")
# ---- model
flags.DEFINE_enum("cell", "lstm", ["lstm", "gru"], "Recurrent cell.")
flags.DEFINE_integer("hidden", 128, "Hidden units per layer (and direction).")
flags.DEFINE_integer("layers", 1, "Stacked recurrent layers.")
flags.DEFINE_bool("bidirectional", False, "Run every layer in both directions (not for char_lm).")
flags.DEFINE_float("dropout", 0.0, "Dropout between stacked layers (needs --layers >= 2).")
flags.DEFINE_enum("recurrent_init", "orthogonal", ["orthogonal", "identity"], "Init of each gate's recurrent "
                  "(H, H) block.")
flags.DEFINE_float("forget_bias", 1.0, "Initial LSTM forget-gate bias.")
flags.DEFINE_enum("head", "last", ["last", "flatten"], "adding / mnist1d / seq_mnist: classify or regress from the "
                  "last hidden state, or from every step's output concatenated (flatten).")
flags.DEFINE_integer("eval_batch_size", 0, "Evaluation batch / char_lm validation streams (0: automatic).")
# ---- generated tasks
flags.DEFINE_integer("length", 100, "adding / forecast: sequence length T; copy: the delay T (T + 20 steps).")
# ---- char_lm
flags.DEFINE_integer("embed", 64, "char_lm: character embedding width.")
flags.DEFINE_integer("unroll", 100, "char_lm: characters per stream and batch (the BPTT truncation length).")
flags.DEFINE_integer("max_eval_chars", 0, "char_lm: validate on at most this many characters (0: all).")
flags.DEFINE_integer("sample_chars", 200, "char_lm: characters sampled into samples/ at each evaluation (0: none).")
flags.DEFINE_string("prompt", "\\n", "char_lm: the text samples continue (\\n stands for a newline).")
flags.DEFINE_float("temperature", 0.8, "char_lm: sampling temperature (0: always the most likely character).")
flags.DEFINE_integer("num_chars", 500, "--mode=sample: how many characters to print.")
flags.DEFINE_integer("sample_seed", 0, "--mode=sample: seed of the sampling draws.")
common.define_optimizer_flags()

CHAR_LM_FLAGS = ("embed", "unroll", "max_eval_chars", "sample_chars")
SAMPLE_FLAGS = ("mode", "prompt", "temperature", "num_chars", "sample_seed")  # do not change what is trained
DATASET = {"adding": "adding", "copy": "copy", "mnist1d": "mnist1d", "seq_mnist": "seq_mnist",
           "forecast": "forecast"}
HAS_LENGTH = ("adding", "copy", "forecast")
PER_STEP = ("copy", "forecast")
REGRESSION = ("adding", "forecast")
VOCAB_FILE = "vocab.json"


def _validate() -> None:
    from research.errors import ConfigError

    task = FLAGS.task
    if FLAGS.hidden < 1 or FLAGS.layers < 1:
        raise ConfigError(f"--hidden ({FLAGS.hidden}) and --layers ({FLAGS.layers}) must be positive")
    if not 0 <= FLAGS.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {FLAGS.dropout}")
    if FLAGS.dropout and FLAGS.layers < 2:
        raise ConfigError("--dropout acts between stacked layers: it needs --layers >= 2")
    if FLAGS.eval_batch_size < 0:
        raise ConfigError(f"--eval_batch_size must be >= 0, got {FLAGS.eval_batch_size}")
    if FLAGS["head"].present and (task in PER_STEP or task == "char_lm"):
        raise ConfigError(f"--head applies to --task=adding|mnist1d|seq_mnist; {task} predicts at every step")
    if FLAGS["length"].present and task not in HAS_LENGTH:
        raise ConfigError(f"--length applies to --task={'|'.join(HAS_LENGTH)}, not {task}")
    if task in HAS_LENGTH and FLAGS.length < 2:
        raise ConfigError(f"--length must be >= 2, got {FLAGS.length}")
    if task == "char_lm":
        if not FLAGS.dataset:
            raise ConfigError("--task=char_lm needs --dataset=text:PATH (a UTF-8 file) or tfds:tiny_shakespeare")
        if FLAGS.bidirectional:
            raise ConfigError("--bidirectional does not apply to char_lm (the model reads left to right)")
        for name in ("unroll", "embed"):
            if getattr(FLAGS, name) < 1:
                raise ConfigError(f"--{name} must be positive, got {getattr(FLAGS, name)}")
        if FLAGS.max_eval_chars < 0 or FLAGS.sample_chars < 0:
            raise ConfigError("--max_eval_chars and --sample_chars must be >= 0")
        if FLAGS.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {FLAGS.temperature}")
    else:
        if FLAGS.dataset:
            raise ConfigError(f"--dataset applies to --task=char_lm; --task={task} uses {DATASET[task]!r}")
        given = [n for n in CHAR_LM_FLAGS + SAMPLE_FLAGS[1:] if FLAGS[n].present]
        if given:
            raise ConfigError(f"--{given[0]} applies to --task=char_lm only")


def _prompt() -> str:
    return FLAGS.prompt.replace("\\n", "\n")


def _supervised_task(optimizer):
    from research import data
    from research.models.rnn import SequenceModel
    from research.tasks.sequence import SequenceTask
    from research.tasks.supervised import SupervisedConfig

    task = FLAGS.task
    options = {"length": FLAGS.length} if task in HAS_LENGTH else {}
    dataset = data.load(DATASET[task], **options)
    kind = "regress" if task in REGRESSION else "classify"
    model = SequenceModel(out_dim=1 if kind == "regress" else dataset.num_classes,
                          head="per_step" if task in PER_STEP else FLAGS.head, cell=FLAGS.cell, hidden=FLAGS.hidden,
                          layers=FLAGS.layers, bidirectional=FLAGS.bidirectional, dropout=FLAGS.dropout,
                          recurrent_init=FLAGS.recurrent_init, forget_bias=FLAGS.forget_bias)
    cfg = SupervisedConfig(kind=kind, batch_size=FLAGS.batch_size, steps=FLAGS.steps,
                           eval_batch_size=FLAGS.eval_batch_size)
    return SequenceTask(model, dataset, optimizer, cfg, per_step=task in PER_STEP)


def _char_lm_task(optimizer):
    from research.data.text import load_char_corpus
    from research.models.rnn import CharLM
    from research.tasks.sequence import CharLMConfig, CharLMTask

    corpus = load_char_corpus(FLAGS.dataset, tfds_data_dir=FLAGS.tfds_data_dir)
    model = CharLM(vocab_size=len(corpus.info["vocab"]), embed=FLAGS.embed, cell=FLAGS.cell, hidden=FLAGS.hidden,
                   layers=FLAGS.layers, dropout=FLAGS.dropout, recurrent_init=FLAGS.recurrent_init,
                   forget_bias=FLAGS.forget_bias)
    cfg = CharLMConfig(batch_size=FLAGS.batch_size, unroll=FLAGS.unroll, steps=FLAGS.steps,
                       eval_batch_size=FLAGS.eval_batch_size, max_eval_chars=FLAGS.max_eval_chars,
                       sample_chars=FLAGS.sample_chars, sample_prompt=_prompt(),
                       sample_temperature=FLAGS.temperature)
    task = CharLMTask(model, corpus, optimizer, cfg)
    if FLAGS.sample_chars:
        task.vocab.encode(cfg.sample_prompt)  # an unknown prompt character fails now, not at the first eval
    return task


def _check_vocab(workdir_path, vocab: str, write: bool) -> None:
    """The vocabulary a char_lm run trained with is kept in the workdir; sampling checks the text still has it."""
    from research.errors import ConfigError

    path = os.path.join(workdir_path, VOCAB_FILE)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)["vocab"]
        if saved != vocab:
            raise ConfigError(f"--dataset={FLAGS.dataset} now has another character set than the run in "
                              f"{workdir_path} was trained on")
    elif write:
        with open(path, "w") as f:
            json.dump({"vocab": vocab}, f)


def sample() -> None:
    import jax

    from research.errors import ConfigError
    from research.loop import restore_latest
    from research.workdir import Workdir

    common.adopt_run_flags(allowed=SAMPLE_FLAGS)  # the run's flags were validated when it trained
    if FLAGS.task != "char_lm":
        raise ConfigError(f"--mode=sample applies to char_lm runs; {FLAGS.workdir} holds a --task={FLAGS.task} run")
    if FLAGS.num_chars < 1 or FLAGS.temperature < 0:
        raise ConfigError(f"--num_chars must be positive and --temperature >= 0, got {FLAGS.num_chars} and "
                          f"{FLAGS.temperature}")
    task = _char_lm_task(common.optimizer_config())
    workdir = Workdir(FLAGS.workdir)
    _check_vocab(workdir.path, task.vocab.chars, write=False)
    loop = common.loop_config()
    replica = FLAGS.replica or 0
    state, step = restore_latest(task, workdir, FLAGS.seed, cfg=loop, replica=replica)
    text = task.generate(state, _prompt(), FLAGS.num_chars, FLAGS.temperature, FLAGS.sample_seed)
    if jax.process_index() == 0:
        run_seed = FLAGS.seed + replica
        which = f", replica {replica} (the run of --seed={run_seed})" if loop.num_seeds > 1 else ""
        print(f"# step {step}{which}, temperature {FLAGS.temperature}, seed {FLAGS.sample_seed}")
        print(_prompt() + text)


def main() -> None:
    import jax

    from research.loop import train_and_evaluate

    common.setup_runtime()
    if FLAGS.mode == "sample":
        sample()
        return
    _validate()
    optimizer, loop = common.optimizer_config(), common.loop_config()
    task = _char_lm_task(optimizer) if FLAGS.task == "char_lm" else _supervised_task(optimizer)
    workdir = common.prepare_workdir(extra_non_defining=SAMPLE_FLAGS)
    if FLAGS.task == "char_lm" and jax.process_index() == 0:
        _check_vocab(workdir.path, task.vocab.chars, write=True)
    final = train_and_evaluate(task, loop, workdir)
    common.print_final(final, workdir)


if __name__ == "__main__":
    common.run(main)
