"""Autoencoders (dense, deep, convolutional; denoising; variational) with an exact PCA baseline.

    python -m launch.autoencoder --flagfile=experiments/autoencoder/quickstart.flags --workdir=/tmp/runs/ae
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
FLAGS.set_default("dataset", "mnist_5k")
flags.DEFINE_enum("arch", "dense", ["dense", "conv"], "Dense (MLP) or convolutional encoder/decoder.")
flags.DEFINE_list("encoder", ["1000", "500", "250"], "Dense encoder hidden widths before the code layer.")
flags.DEFINE_list("decoder", None, "Dense decoder hidden widths (unset: the encoder's, reversed).")
flags.DEFINE_list("conv_channels", ["32", "64"], "Channels of the stride-2 3x3 convolutions (conv arch).")
flags.DEFINE_integer("latent", 30, "Code size (also the number of components of the PCA baseline).")
flags.DEFINE_string("activation", "relu", "Hidden activation (relu, tanh, sigmoid, gelu, elu, leaky_relu, silu).")
flags.DEFINE_string("code_activation", "identity", "Code layer activation (identity: a linear code).")
flags.DEFINE_enum("loss", "bce", ["bce", "mse"], "Reconstruction loss: Bernoulli cross-entropy or squared error.")
flags.DEFINE_enum("noise", "none", ["none", "gaussian", "mask"], "Corruption of training inputs (denoising AE).")
flags.DEFINE_float("noise_level", 0.0, "Gaussian noise std, or the probability that a pixel is masked to 0.")
flags.DEFINE_bool("variational", False, "Variational autoencoder: Gaussian encoder, reparameterisation, ELBO.")
flags.DEFINE_float("kl_weight", 1.0, "VAE: weight of the KL term in the training loss (1: maximise the ELBO).")
flags.DEFINE_integer("eval_batch_size", 0, "Evaluation batch (0: a multiple of --batch_size >= 512).")
flags.DEFINE_integer("interpolation_steps", 8, "Decoded points on each latent interpolation line.")
common.define_optimizer_flags()

# Flags that change only what is drawn or how evaluation is batched, not the trained model.
PICTURE_FLAGS = {"eval_batch_size", "interpolation_steps"}


def _widths(name: str, values: list[str] | None, allow_empty: bool = True) -> list[int]:
    from research.errors import ConfigError

    try:
        widths = [int(v) for v in values or [] if v.strip()]
    except ValueError:
        raise ConfigError(f"--{name} must be integers, got {values}") from None
    if any(w <= 0 for w in widths) or (not widths and not allow_empty):
        raise ConfigError(f"--{name} needs positive widths, got {values}")
    return widths


def build_task():
    """The task described by the flags (validated; raises ConfigError on bad or contradictory input)."""
    from research import data
    from research.errors import ConfigError
    from research.models.autoencoder import make_autoencoder
    from research.tasks.autoencoder import AutoencoderConfig, AutoencoderTask

    dense = FLAGS.arch == "dense"
    for name, applies in (("encoder", dense), ("decoder", dense), ("conv_channels", not dense)):
        if FLAGS[name].present and not applies:
            raise ConfigError(f"--{name} does not apply to --arch={FLAGS.arch}")
    optimizer = common.optimizer_config()
    cfg = AutoencoderConfig(batch_size=FLAGS.batch_size, steps=FLAGS.steps, loss=FLAGS.loss, noise=FLAGS.noise,
                            noise_level=FLAGS.noise_level, kl_weight=FLAGS.kl_weight,
                            eval_batch_size=FLAGS.eval_batch_size, interpolation_steps=FLAGS.interpolation_steps)
    cfg.validate(FLAGS.variational)
    dataset = data.load(FLAGS.dataset, tfds_data_dir=FLAGS.tfds_data_dir)
    model = make_autoencoder(
        FLAGS.arch, dataset.input_shape, FLAGS.latent, hidden=_widths("encoder", FLAGS.encoder),
        decoder_hidden=None if FLAGS.decoder is None else _widths("decoder", FLAGS.decoder),
        channels=_widths("conv_channels", FLAGS.conv_channels, allow_empty=False),
        activation_name=FLAGS.activation, code_activation=FLAGS.code_activation, variational=FLAGS.variational)
    return AutoencoderTask(model, dataset, optimizer, cfg)


def main() -> None:
    from research.loop import train_and_evaluate

    common.setup_runtime()
    loop = common.loop_config()
    loop.validate()
    task = build_task()
    workdir = common.prepare_workdir(PICTURE_FLAGS)
    final = train_and_evaluate(task, loop, workdir)
    m = final["metrics"]
    common.print_final(final, workdir, extra=(
        f"test squared error per image: autoencoder {m['sq_error']:.3f}, PCA with {task.model.latent} "
        f"components {m['pca_sq_error']:.3f}", f"pictures in {workdir.path / 'images'}"))


if __name__ == "__main__":
    common.run(main)
