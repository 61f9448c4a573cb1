"""MLP classifier / regressor, and convolutional classifiers of images (--architecture=cnn|lenet).

    python -m launch.mlp --flagfile=experiments/mlp/quickstart.flags --workdir=/tmp/runs/mlp
    python -m launch.mlp --flagfile=experiments/mlp/fashion_cnn.flags --workdir=/tmp/runs/fashion_cnn
    python -m launch.mlp --flagfile=experiments/mlp/quickstart.flags --prune_sparsity=0.9 --workdir=/tmp/runs/pruned
    python -m launch.mlp --flagfile=experiments/mlp/quickstart.flags --distill_from=/tmp/runs/mlp \
        --hidden=64 --workdir=/tmp/runs/student
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
common.define_data_flags()
common.define_optimizer_flags()
flags.DEFINE_enum("task", "classify", ["classify", "regress"], "Classification (softmax CE) or regression (MSE).")
flags.DEFINE_enum("architecture", None, ["mlp", "cnn", "lenet"], "mlp (unset: mlp): --hidden dense layers; cnn: "
                  "conv32-pool-conv64-pool (3x3, the Keras MNIST example) then --hidden dense layers (none unless "
                  "given) and the output; lenet: LeNet-5 (6 and 16 5x5 maps, average pooling, 120-84, tanh). "
                  "cnn and lenet need images (research/models/lenet.py).")
flags.DEFINE_list("hidden", ["256", "256"], "Hidden layer widths, comma separated (empty: linear model).")
flags.DEFINE_string("activation", "relu", "Hidden activation (relu, tanh, sigmoid, gelu, elu, leaky_relu, silu).")
flags.DEFINE_float("dropout", 0.0, "Dropout rate after each hidden layer (cnn, lenet: before the output layer).")
flags.DEFINE_bool("batch_norm", False, "Batch normalisation before each hidden activation (mlp only).")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "Dtype of activations and matmuls; "
                  "parameters and optimizer state stay float32.")
flags.DEFINE_integer("eval_batch_size", 0, "Evaluation batch (0: a multiple of --batch_size >= 512).")
# knowledge distillation (research/compress/distill.py; docs/compression.md); unset: off, absent from flags.txt
flags.DEFINE_string("distill_from", None, "Distil from the classifier trained in this workdir (its config.json and "
                    "latest checkpoint; same dataset and classes): loss = (1-A) CE + A T^2 KL(teacher_T || student_T).")
flags.DEFINE_float("distill_temperature", None, "Distillation temperature T > 0 (default 4).")
flags.DEFINE_float("distill_weight", None, "Distillation: weight A in [0, 1] of the soft-target term (default 0.9).")
flags.adopt_module_key_flags(common)

NOT_FOR = {"cnn": ("batch_norm",), "lenet": ("hidden", "activation", "batch_norm")}  # flags that do not apply


def config_from_flags():
    from research.families import mlp
    from research.tasks.supervised import SupervisedConfig

    architecture = FLAGS.architecture or "mlp"
    common.refuse_given(NOT_FOR.get(architecture, ()), f"does not apply to --architecture={architecture}")
    # cnn: dense layers only when --hidden is given (the Keras example has none); lenet: its own layers
    conv = architecture != "mlp" and not FLAGS["hidden"].present
    return mlp.Config(data=common.data_config(), loop=common.loop_config(), optimizer=common.optimizer_config(),
                      model=mlp.ModelConfig(hidden=() if conv else common.widths("hidden"),
                                            activation=FLAGS.activation, dropout=FLAGS.dropout,
                                            batch_norm=FLAGS.batch_norm, architecture=architecture),
                      task=SupervisedConfig(kind=FLAGS.task, compute_dtype=FLAGS.compute_dtype),
                      eval_batch_size=FLAGS.eval_batch_size, quant=common.quant_config(),
                      distill=distill_config())


def distill_config():
    """The distillation flags as a DistillConfig (off unless --distill_from is given; the others need it)."""
    import os

    from research.compress.config import DistillConfig

    if not FLAGS.distill_from:
        common.refuse_given(("distill_temperature", "distill_weight"), "applies only with --distill_from")
        return DistillConfig()
    d = DistillConfig()
    return DistillConfig(teacher=os.path.abspath(FLAGS.distill_from),
                         temperature=d.temperature if FLAGS.distill_temperature is None else FLAGS.distill_temperature,
                         weight=d.weight if FLAGS.distill_weight is None else FLAGS.distill_weight)


def main() -> None:
    common.setup_runtime()
    common.train("mlp", config_from_flags())


if __name__ == "__main__":
    common.run(main)
