"""Autoencoders (dense, deep, convolutional; denoising; variational) with an exact PCA baseline.

    python -m launch.autoencoder --flagfile=experiments/autoencoder/quickstart.flags --workdir=/tmp/runs/ae
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
common.define_data_flags(dataset="mnist_5k")
common.define_optimizer_flags()
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
flags.adopt_module_key_flags(common)

# Flags that change only what is drawn or how evaluation is batched, not the trained model.
PICTURE_FLAGS = {"eval_batch_size", "interpolation_steps"}


def config_from_flags():
    from research.families import autoencoder as ae
    from research.tasks.autoencoder import AutoencoderConfig

    dense = FLAGS.arch == "dense"
    common.refuse_given(("conv_channels",) if dense else ("encoder", "decoder"),
                        f"does not apply to --arch={FLAGS.arch}")
    model = ae.ModelConfig(arch=FLAGS.arch, encoder=common.widths("encoder"),
                           decoder=common.widths("decoder", allow_none=True),
                           conv_channels=common.widths("conv_channels"), latent=FLAGS.latent,
                           activation=FLAGS.activation, code_activation=FLAGS.code_activation)
    return ae.Config(data=common.data_config(), loop=common.loop_config(), optimizer=common.optimizer_config(),
                     model=model, objective=AutoencoderConfig(
                         loss=FLAGS.loss, noise=FLAGS.noise, noise_level=FLAGS.noise_level,
                         variational=FLAGS.variational, kl_weight=FLAGS.kl_weight),
                     eval_batch_size=FLAGS.eval_batch_size, interpolation_steps=FLAGS.interpolation_steps,
                     quant=common.quant_config())


def _summary(final, run):
    m = final["metrics"]
    return (f"test squared error per image: autoencoder {m['sq_error']:.3f}, PCA with {run.task.model.latent} "
            f"components {m['pca_sq_error']:.3f}",)


def main() -> None:
    common.setup_runtime()
    common.train("autoencoder", config_from_flags(), non_defining=PICTURE_FLAGS, summary=_summary)


if __name__ == "__main__":
    common.run(main)
