"""Post-training int8 quantisation of a trained MLP-family run with qwix: evaluate it on the run's test set, report
accuracy and bytes beside float32, and write a workdir holding the quantised checkpoint (launch.export exports it,
int8 arrays in params.npz).

    python -m launch.quantize --workdir=/tmp/runs/mlp --method=int8_weights --out=/tmp/runs/mlp_int8
    python -m launch.quantize --workdir=/tmp/runs/fashion_cnn --method=int8_dynamic --out=/tmp/runs/cnn_int8
    python -m launch.export --workdir=/tmp/runs/mlp_int8 --out=/tmp/exports/mlp_int8

Methods (research/compress/quantize.py): int8_weights (int8 weights, float32 activations; convolutions also
quantise their inputs, qwix 0.1.8 has no weight-only convolution) and int8_dynamic (int8 weights and activations,
the activations' scales computed per example at run time). A --qat=int8 run is quantised the same way.
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_enum("method", None, ["int8_weights", "int8_dynamic"], "int8_weights: int8 weights, float "
                  "activations; int8_dynamic: int8 weights and dynamically quantised int8 activations.")
flags.DEFINE_string("out", None, "Directory to write the quantised run to (new or empty, or a previous output with "
                    "--overwrite); launch.export --workdir=<out> exports it.")
flags.adopt_module_key_flags(common)


def main() -> None:
    from research.errors import ConfigError

    for name in ("workdir", "method", "out"):
        if not FLAGS[name].value:
            raise ConfigError(f"--{name} is required")
    common.setup_runtime()

    from research.compress.quantize import describe, quantize_run
    from research.workdir import Workdir

    final = quantize_run(Workdir(FLAGS.workdir), FLAGS.method, FLAGS.out, replica=FLAGS.replica or 0,
                         overwrite=FLAGS.overwrite)
    for line in describe(final):
        print(line)
    print(f"wrote {Workdir(FLAGS.out).final_file}; export it with: python -m launch.export --workdir={FLAGS.out} "
          f"--out=DIR")


if __name__ == "__main__":
    common.run(main)
