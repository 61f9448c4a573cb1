"""MLP classifier / regressor.

    python -m launch.mlp --flagfile=experiments/mlp/quickstart.flags --workdir=/tmp/runs/mlp
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
common.define_data_flags()
common.define_optimizer_flags()
flags.DEFINE_enum("task", "classify", ["classify", "regress"], "Classification (softmax CE) or regression (MSE).")
flags.DEFINE_list("hidden", ["256", "256"], "Hidden layer widths, comma separated (empty: linear model).")
flags.DEFINE_string("activation", "relu", "Hidden activation (relu, tanh, sigmoid, gelu, elu, leaky_relu, silu).")
flags.DEFINE_float("dropout", 0.0, "Dropout rate after each hidden layer.")
flags.DEFINE_bool("batch_norm", False, "Batch normalisation before each hidden activation.")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "Dtype of activations and matmuls; "
                  "parameters and optimizer state stay float32.")
flags.DEFINE_integer("eval_batch_size", 0, "Evaluation batch (0: a multiple of --batch_size >= 512).")
flags.adopt_module_key_flags(common)


def config_from_flags():
    from research.families import mlp
    from research.tasks.supervised import SupervisedConfig

    return mlp.Config(data=common.data_config(), loop=common.loop_config(), optimizer=common.optimizer_config(),
                      model=mlp.ModelConfig(hidden=common.widths("hidden"), activation=FLAGS.activation,
                                            dropout=FLAGS.dropout, batch_norm=FLAGS.batch_norm),
                      task=SupervisedConfig(kind=FLAGS.task, compute_dtype=FLAGS.compute_dtype),
                      eval_batch_size=FLAGS.eval_batch_size)


def main() -> None:
    common.setup_runtime()
    common.train("mlp", config_from_flags())


if __name__ == "__main__":
    common.run(main)
