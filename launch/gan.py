"""GANs: DCGAN / MLP players; minimax, non-saturating, Wasserstein, hinge and least-squares losses; gradient
penalty or weight clipping; n_critic critic updates per generator update; unrolled critics.

    python -m launch.gan --flagfile=experiments/gan/quickstart.flags --workdir=/tmp/runs/gan
    python -m launch.gan --mode=sample --workdir=/tmp/runs/gan --num_samples=100      # from the latest checkpoint
    python -m launch.gan --mode=evaluator                 # train/load the LeNet evaluator, print its reference numbers
    python -m launch.gan --mode=evaluator --dataset=fashion_mnist      # the evaluator of Fashion-MNIST samples
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
common.define_data_flags(dataset="mnist_5k", batch_size=64)
common.define_optimizer_flags("g_", {"optimizer": "adam", "learning_rate": 2e-4, "beta1": 0.5}, who="generator")
common.define_optimizer_flags("d_", {"optimizer": "adam", "learning_rate": 2e-4, "beta1": 0.5}, who="discriminator")
flags.DEFINE_enum("mode", "train", ["train", "sample", "evaluator"],
                  "train; sample: write --num_samples samples and a picture from the latest checkpoint of "
                  "--workdir; evaluator: train or load the cached LeNet evaluator of --dataset and print its "
                  "reference numbers.")
flags.DEFINE_enum("architecture", "dcgan", ["dcgan", "mlp"], "DCGAN conv nets (images) or MLPs (2-D data).")
flags.DEFINE_integer("z_dim", 100, "Dimension of the generator's Gaussian noise z.")
flags.DEFINE_enum("gan_loss", "nonsaturating", ["minimax", "nonsaturating", "wasserstein", "hinge", "least_squares"],
                  "GAN loss (research/objectives/gan.py).")
flags.DEFINE_enum("gan_penalty", "none", ["none", "gradient_penalty", "weight_clip"], "Critic regulariser.")
flags.DEFINE_float("gp_weight", 10.0, "Gradient penalty weight lambda.")
flags.DEFINE_float("weight_clip", 0.01, "Weight clipping: critic parameters to [-c, c] after each critic update.")
flags.DEFINE_integer("n_critic", 1, "Critic updates per generator update (each on its own batch).")
flags.DEFINE_integer("unroll_steps", 0, "Unrolled GAN: the generator's loss after K differentiable critic updates.")
flags.DEFINE_bool("conditional", False, "Class-conditional GAN (label embeddings into G and D).")
flags.DEFINE_integer("embed_dim", 16, "Conditional: size of the generator's label embedding.")
# ---- DCGAN
flags.DEFINE_integer("image_size", 0, "Train on images resized to this size (0: the dataset's; e.g. 28, 32, 64).")
flags.DEFINE_integer("g_width", 64, "DCGAN generator width (channels of its last upsampling block).")
flags.DEFINE_integer("d_width", 64, "DCGAN discriminator width (channels of its first conv).")
flags.DEFINE_bool("g_batch_norm", True, "Batch norm in the DCGAN generator.")
flags.DEFINE_bool("d_batch_norm", True, "Batch norm in the DCGAN discriminator (off for WGAN-GP critics).")
flags.DEFINE_bool("spectral_norm", False, "Spectral normalisation of every discriminator layer.")
flags.DEFINE_enum("upsample", "phase", ["phase", "mixed", "phase2x2", "transpose"], "How the DCGAN generator "
                  "computes its 4x4 stride-2 transposed convolutions (same parameters, outputs equal up to float "
                  "rounding): phase = one 3x3 conv to 4x the channels + depth-to-space; phase2x2 = four 2x2 "
                  "convolutions, one per output phase (the exact multiply-adds); mixed = phase2x2 for the hidden "
                  "layers, nn.ConvTranspose for the output layer; transpose = nn.ConvTranspose everywhere. phase2x2 "
                  "and mixed: about 1.4x faster 64x64 steps than phase on this CPU (benchmarks/README.md).")
# ---- MLP
flags.DEFINE_list("g_hidden", ["128", "128"], "MLP generator hidden widths.")
flags.DEFINE_list("d_hidden", ["128", "128"], "MLP discriminator hidden widths.")
flags.DEFINE_string("mlp_activation", "tanh", "MLP hidden activation (relu, tanh, leaky_relu, ...).")
flags.DEFINE_enum("mlp_init", "default", ["default", "orthogonal"], "MLP weight initialisation.")
flags.DEFINE_float("init_gain", 1.0, "Scale of the orthogonal initialisation.")
# ---- evaluation and sampling
flags.DEFINE_enum("evaluator", "auto", ["auto", "lenet", "none"], "Image metrics from a LeNet evaluator trained on "
                  "the run's dataset (auto: for mnist_5k, tfds:mnist, mnist and fashion_mnist; lenet: also other "
                  "1-channel images, scored by the mnist_5k one).")
flags.DEFINE_integer("num_eval_samples", 0, "Samples per evaluation (0: 2,500 for 2-D data, the test split's size "
                     "for images).")
flags.DEFINE_integer("eval_batch_size", 512, "Samples generated per batch at evaluation/sampling.")
flags.DEFINE_integer("grid_size", 64, "Images in each evaluation's sample grid.")
flags.DEFINE_integer("num_samples", 64, "--mode=sample: how many samples to write.")
flags.DEFINE_integer("sample_seed", 0, "--mode=sample: seed of z.")
flags.DEFINE_string("output_dir", None, "--mode=sample: where to write (default <workdir>/samples).")
flags.adopt_module_key_flags(common)

SAMPLE_FLAGS = ("mode", "num_samples", "sample_seed", "output_dir")  # do not change the trained model
DCGAN_ONLY = ("image_size", "g_width", "d_width", "g_batch_norm", "d_batch_norm", "spectral_norm", "upsample")
MLP_ONLY = ("g_hidden", "d_hidden", "mlp_activation", "mlp_init", "init_gain")


def config_from_flags(strict: bool = True):
    """The run the flags describe. `strict=False` skips the checks for flags given that do not apply (sampling
    adopts every flag of the trained run, so all count as given)."""
    from research.families import gan
    from research.tasks.gan import GANConfig

    if strict:
        common.refuse_given(MLP_ONLY if FLAGS.architecture == "dcgan" else DCGAN_ONLY,
                            f"does not apply to --architecture={FLAGS.architecture}")
        for name, penalty in (("gp_weight", "gradient_penalty"), ("weight_clip", "weight_clip")):
            if FLAGS.gan_penalty != penalty:
                common.refuse_given((name,), f"applies to --gan_penalty={penalty}, not {FLAGS.gan_penalty}")
    model = gan.ModelConfig(
        architecture=FLAGS.architecture, embed_dim=FLAGS.embed_dim, g_width=FLAGS.g_width, d_width=FLAGS.d_width,
        g_batch_norm=FLAGS.g_batch_norm, d_batch_norm=FLAGS.d_batch_norm, spectral_norm=FLAGS.spectral_norm,
        upsample=FLAGS.upsample, g_hidden=common.widths("g_hidden"), d_hidden=common.widths("d_hidden"),
        mlp_activation=FLAGS.mlp_activation, mlp_init=FLAGS.mlp_init, init_gain=FLAGS.init_gain)
    return gan.Config(
        data=common.data_config(), loop=common.loop_config(), g_optimizer=common.optimizer_config("g_"),
        d_optimizer=common.optimizer_config("d_"), model=model,
        gan=GANConfig(z_dim=FLAGS.z_dim, loss=FLAGS.gan_loss, penalty=FLAGS.gan_penalty, gp_weight=FLAGS.gp_weight,
                      weight_clip=FLAGS.weight_clip, n_critic=FLAGS.n_critic, unroll_steps=FLAGS.unroll_steps,
                      conditional=FLAGS.conditional),
        image_size=FLAGS.image_size, evaluator=FLAGS.evaluator, num_eval_samples=FLAGS.num_eval_samples,
        eval_batch_size=FLAGS.eval_batch_size, grid_size=FLAGS.grid_size, quant=common.quant_config())


def sample() -> None:
    import pathlib

    import jax
    import numpy as np

    from research import parallel
    from research.data import facts
    from research.errors import ConfigError
    from research.evaluators.gan import GANSampler
    from research.families import gan
    from research.loop import restore_latest
    from research.workdir import Workdir
    from research.writers import save_figure, save_png

    common.adopt_run_flags(allowed=SAMPLE_FLAGS)
    if FLAGS.num_samples < 1:
        raise ConfigError(f"--num_samples must be positive, got {FLAGS.num_samples}")
    cfg = config_from_flags(strict=False)
    mesh = parallel.make_mesh()
    run = gan.build(cfg, mesh, evaluate=False)
    task = run.task
    workdir = Workdir(FLAGS.workdir)
    workdir.check_dataset(facts(run.dataset), only_with_checkpoints=False)
    out = pathlib.Path(FLAGS.output_dir).absolute() if FLAGS.output_dir else workdir.samples
    inside = out.is_relative_to(workdir.path)
    chief = jax.process_index() == 0
    if inside and chief:
        workdir.lock()  # the workdir is written by one process at a time
    try:
        replica = FLAGS.replica or 0
        state, step = restore_latest(task, workdir, cfg.loop.seed, mesh, cfg.loop, replica=replica)
        sampler = GANSampler(task, cfg.eval_batch_size)
        samples = sampler.sample(state, FLAGS.num_samples, FLAGS.sample_seed, mesh)
        if not chief:
            return
        out.mkdir(parents=True, exist_ok=True)
        which = f"_replica{replica}" if cfg.loop.num_seeds > 1 else ""  # replica i: the run of --seed + i
        stem = out / f"samples_step{step:07d}{which}_seed{FLAGS.sample_seed}"
        np.savez(stem.with_suffix(".npz"), **samples)
        picture = sampler.picture(samples, FLAGS.num_samples)
        (save_png if isinstance(picture, np.ndarray) else save_figure)(stem.with_suffix(".png"), picture)
        print(f"step {step}: wrote {len(samples['x'])} samples to {stem.with_suffix('.npz')} and "
              f"{stem.with_suffix('.png')}")
    finally:
        workdir.unlock()


def evaluator() -> None:
    """Train (once) or load the LeNet feature classifier of --dataset; print its test accuracy and the metrics of
    real training images against real test images (the floor a perfect generator would reach)."""
    import numpy as np

    from research import data
    from research.errors import ConfigError
    from research.metrics.feature_classifier import CLASSIFIERS, classifier_for, load_or_train

    cfg = classifier_for(FLAGS.dataset)
    if cfg is None:
        raise ConfigError(f"no LeNet evaluator is trained on {FLAGS.dataset!r}; datasets with one: "
                          f"{', '.join(CLASSIFIERS)}")
    classifier = load_or_train(cfg, data_dir=FLAGS.data_dir)
    ds = data.load(cfg.dataset, data_dir=FLAGS.data_dir)
    test = ds.split("test")["x"]
    train_codes = ds.stored("train")["x"]
    pick = np.random.default_rng(0).permutation(len(train_codes))[:len(test)]
    train = data.decode({"x": train_codes[pick]}, ds.scales)["x"]
    info = classifier.info
    print(f"test_accuracy {info['test_accuracy']:.4f} ({cfg.dataset} test split, {len(test):,} images), trained in "
          f"{info['train_seconds']} s ({info['train_steps']:,} steps; lenet-...-{cfg.key()} in the evaluator cache)")
    metrics = classifier.report(train, classifier.predict(test)[0])
    print(f"real train images vs real test images ({len(test):,} each): frechet_lenet {metrics['frechet_lenet']:.2f}, "
          f"classifier_score {metrics['classifier_score']:.2f}, class_kl {metrics['class_kl']:.3f}")


def main() -> None:
    common.setup_runtime()
    if FLAGS.mode == "train":
        common.train("gan", config_from_flags(), non_defining=SAMPLE_FLAGS)
    else:
        {"sample": sample, "evaluator": evaluator}[FLAGS.mode]()


if __name__ == "__main__":
    common.run(main)
