"""MLP classifier / regressor.

    python -m launch.mlp --flagfile=experiments/mlp/quickstart.flags --workdir=/tmp/runs/mlp
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_enum("task", "classify", ["classify", "regress"], "Classification (softmax CE) or regression (MSE).")
flags.DEFINE_list("hidden", ["256", "256"], "Hidden layer widths, comma separated (empty: linear model).")
flags.DEFINE_string("activation", "relu", "Hidden activation (relu, tanh, sigmoid, gelu, elu, leaky_relu, silu).")
flags.DEFINE_float("dropout", 0.0, "Dropout rate after each hidden layer.")
flags.DEFINE_bool("batch_norm", False, "Batch normalisation before each hidden activation.")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "Dtype of activations and matmuls; "
                  "parameters and optimizer state stay float32.")
flags.DEFINE_integer("eval_batch_size", 0, "Evaluation batch (0: a multiple of --batch_size >= 512).")
common.define_optimizer_flags()


def main() -> None:
    from research import data
    from research.errors import ConfigError
    from research.loop import train_and_evaluate
    from research.models.activations import activation
    from research.models.mlp import MLP
    from research.tasks.supervised import SupervisedConfig, SupervisedTask

    common.setup_runtime()
    if not FLAGS.dataset:
        raise ConfigError("--dataset is required")
    try:
        hidden = [int(h) for h in FLAGS.hidden if h.strip()]
    except ValueError:
        raise ConfigError(f"--hidden must be integers, got {FLAGS.hidden}") from None
    if any(h <= 0 for h in hidden):
        raise ConfigError(f"--hidden widths must be positive, got {hidden}")
    if not 0 <= FLAGS.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {FLAGS.dropout}")
    activation(FLAGS.activation)  # validates the name
    optimizer, loop = common.optimizer_config(), common.loop_config()
    dataset = data.load(FLAGS.dataset, tfds_data_dir=FLAGS.tfds_data_dir)
    out_dim = dataset.num_classes if FLAGS.task == "classify" and dataset.num_classes else 1
    model = MLP(hidden=hidden, out_dim=out_dim, activation=FLAGS.activation, dropout=FLAGS.dropout,
                batch_norm=FLAGS.batch_norm)
    task = SupervisedTask(model, dataset, optimizer, SupervisedConfig(
        kind=FLAGS.task, batch_size=FLAGS.batch_size, steps=FLAGS.steps, eval_batch_size=FLAGS.eval_batch_size,
        compute_dtype=FLAGS.compute_dtype))
    workdir = common.prepare_workdir()
    final = train_and_evaluate(task, loop, workdir)
    common.print_final(final, workdir)


if __name__ == "__main__":
    common.run(main)
