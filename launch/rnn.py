"""GRU / LSTM sequence models: the adding and copy problems, MNIST-1D, sequential MNIST, forecasting and a
character language model.

    python -m launch.rnn --flagfile=experiments/rnn/quickstart.flags --workdir=/tmp/runs/rnn_quick
    python -m launch.rnn --flagfile=experiments/rnn/char_lm_lstm.flags --workdir=/tmp/runs/char_lm
    python -m launch.rnn --mode=sample --workdir=/tmp/runs/char_lm --prompt=ROMEO: --num_chars=500 \
        --temperature=0.8
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
TASKS = ("adding", "copy", "mnist1d", "seq_mnist", "char_lm", "forecast")
common.define_data_flags()
common.define_optimizer_flags()
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
flags.adopt_module_key_flags(common)

CHAR_LM_FLAGS = ("embed", "unroll", "max_eval_chars", "sample_chars", "prompt", "temperature", "num_chars",
                 "sample_seed")
SAMPLE_FLAGS = ("mode", "prompt", "temperature", "num_chars", "sample_seed")  # do not change what is trained
HAS_LENGTH = ("adding", "copy", "forecast")
PER_STEP = ("copy", "forecast")


def _prompt() -> str:
    return FLAGS.prompt.replace("\\n", "\n")


def config_from_flags(strict: bool = True):
    """The run the flags describe (`strict=False`: no checks of flags given that do not apply, see launch.gan)."""
    from research.errors import ConfigError
    from research.families import rnn

    task = FLAGS.task
    if strict:
        if task in PER_STEP or task == "char_lm":
            common.refuse_given(("head",), f"applies to --task=adding|mnist1d|seq_mnist; {task} predicts at every "
                                           f"step")
        if task not in HAS_LENGTH:
            common.refuse_given(("length",), f"applies to --task={'|'.join(HAS_LENGTH)}, not {task}")
        if task != "char_lm":
            common.refuse_given(("dataset",), f"applies to --task=char_lm; --task={task} uses {rnn.DATASET[task]!r}")
            common.refuse_given(CHAR_LM_FLAGS, "applies to --task=char_lm only")
    if task == "char_lm" and not FLAGS.dataset:
        raise ConfigError("--task=char_lm needs --dataset: tiny_shakespeare, text:PATH (a UTF-8 file) or "
                          "tfds:tiny_shakespeare")
    model = rnn.ModelConfig(cell=FLAGS.cell, hidden=FLAGS.hidden, layers=FLAGS.layers,
                            bidirectional=FLAGS.bidirectional, dropout=FLAGS.dropout,
                            recurrent_init=FLAGS.recurrent_init, forget_bias=FLAGS.forget_bias, head=FLAGS.head,
                            embed=FLAGS.embed)
    return rnn.Config(data=common.data_config(FLAGS.dataset if task == "char_lm" else rnn.DATASET[task]),
                      loop=common.loop_config(), optimizer=common.optimizer_config(), task=task, model=model,
                      length=FLAGS.length, eval_batch_size=FLAGS.eval_batch_size, unroll=FLAGS.unroll,
                      max_eval_chars=FLAGS.max_eval_chars, sample_chars=FLAGS.sample_chars, prompt=_prompt(),
                      temperature=FLAGS.temperature, quant=common.quant_config())


def sample() -> None:
    import jax

    from research import parallel
    from research.data import facts
    from research.errors import ConfigError
    from research.evaluators.language_model import TextSampler
    from research.families import rnn
    from research.loop import restore_latest
    from research.workdir import Workdir

    common.adopt_run_flags(allowed=SAMPLE_FLAGS)  # the run's flags were validated when it trained
    if FLAGS.task != "char_lm":
        raise ConfigError(f"--mode=sample applies to char_lm runs; {FLAGS.workdir} holds a --task={FLAGS.task} run")
    cfg = config_from_flags(strict=False)
    mesh = parallel.make_mesh()
    run = rnn.build(cfg, mesh, evaluate=False)
    workdir = Workdir(FLAGS.workdir)
    workdir.check_dataset(facts(run.dataset), only_with_checkpoints=False)
    replica = FLAGS.replica or 0
    state, step = restore_latest(run.task, workdir, cfg.loop.seed, mesh, cfg.loop, replica=replica)
    text = TextSampler(run.task).generate(state, _prompt(), FLAGS.num_chars, FLAGS.temperature, FLAGS.sample_seed)
    if jax.process_index() == 0:
        run_seed = cfg.loop.seed + replica
        which = f", replica {replica} (the run of --seed={run_seed})" if cfg.loop.num_seeds > 1 else ""
        print(f"# step {step}{which}, temperature {FLAGS.temperature}, seed {FLAGS.sample_seed}")
        print(_prompt() + text)


def main() -> None:
    common.setup_runtime()
    if FLAGS.mode == "sample":
        sample()
    else:
        common.train("rnn", config_from_flags(), non_defining=SAMPLE_FLAGS)


if __name__ == "__main__":
    common.run(main)
