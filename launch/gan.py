"""GANs: DCGAN / MLP players; minimax, non-saturating, Wasserstein, hinge and least-squares losses; gradient
penalty or weight clipping; n_critic critic updates per generator update; unrolled critics.

    python -m launch.gan --flagfile=experiments/gan/quickstart.flags --workdir=/tmp/runs/gan
    python -m launch.gan --mode=sample --workdir=/tmp/runs/gan --num_samples=100      # from the latest checkpoint
    python -m launch.gan --mode=evaluator                 # train/load the LeNet evaluator, print its reference numbers
"""

from absl import flags

from launch import common

FLAGS = flags.FLAGS
FLAGS.set_default("dataset", "mnist_5k")
FLAGS.set_default("batch_size", 64)
flags.DEFINE_enum("mode", "train", ["train", "sample", "evaluator"],
                  "train; sample: write --num_samples samples and a picture from the latest checkpoint of "
                  "--workdir; evaluator: train or load the cached LeNet evaluator and print its reference numbers.")
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
flags.DEFINE_enum("upsample", "phase", ["phase", "transpose"], "How the generator computes its 4x4 stride-2 "
                  "transposed convolutions: 3x3 conv + depth-to-space (fast on CPU) or nn.ConvTranspose. Same "
                  "parameters and outputs.")
# ---- MLP
flags.DEFINE_list("g_hidden", ["128", "128"], "MLP generator hidden widths.")
flags.DEFINE_list("d_hidden", ["128", "128"], "MLP discriminator hidden widths.")
flags.DEFINE_string("mlp_activation", "tanh", "MLP hidden activation (relu, tanh, leaky_relu, ...).")
flags.DEFINE_enum("mlp_init", "default", ["default", "orthogonal"], "MLP weight initialisation.")
flags.DEFINE_float("init_gain", 1.0, "Scale of the orthogonal initialisation.")
# ---- evaluation and sampling
flags.DEFINE_enum("evaluator", "auto", ["auto", "lenet", "none"], "Image metrics from the LeNet evaluator "
                  "(auto: for mnist_5k and tfds:mnist).")
flags.DEFINE_integer("num_eval_samples", 0, "Samples per evaluation (0: 2,500 for 2-D data, the test split's size "
                     "for images).")
flags.DEFINE_integer("eval_batch_size", 512, "Samples generated per batch at evaluation/sampling.")
flags.DEFINE_integer("grid_size", 64, "Images in each evaluation's sample grid.")
flags.DEFINE_integer("num_samples", 64, "--mode=sample: how many samples to write.")
flags.DEFINE_integer("sample_seed", 0, "--mode=sample: seed of z.")
flags.DEFINE_string("output_dir", None, "--mode=sample: where to write (default <workdir>/samples).")
common.define_optimizer_flags("g_", {"optimizer": "adam", "learning_rate": 2e-4, "beta1": 0.5}, who="generator")
common.define_optimizer_flags("d_", {"optimizer": "adam", "learning_rate": 2e-4, "beta1": 0.5}, who="discriminator")

SAMPLE_FLAGS = ("mode", "num_samples", "sample_seed", "output_dir")  # do not change the trained model
MNIST_LIKE = ("mnist_5k", "tfds:mnist")
DCGAN_ONLY = ("image_size", "g_width", "d_width", "g_batch_norm", "d_batch_norm", "spectral_norm", "upsample")
MLP_ONLY = ("g_hidden", "d_hidden", "mlp_activation", "mlp_init", "init_gain")


def _widths(name: str) -> list[int]:
    from research.errors import ConfigError

    try:
        widths = [int(v) for v in getattr(FLAGS, name) if v.strip()]
    except ValueError:
        raise ConfigError(f"--{name} must be integers, got {getattr(FLAGS, name)}") from None
    if any(w <= 0 for w in widths):
        raise ConfigError(f"--{name} widths must be positive, got {widths}")
    return widths


def _models(dataset, image_shape, strict: bool):
    """(generator, discriminator) of --architecture for data of `image_shape` (or 2-D points)."""
    from research.errors import ConfigError
    from research.models.activations import activation
    from research.models.dcgan import DCGANDiscriminator, DCGANGenerator, resolution_plan
    from research.models.gan_mlp import MLPDiscriminator, MLPGenerator

    ignored = MLP_ONLY if FLAGS.architecture == "dcgan" else DCGAN_ONLY
    given = [name for name in ignored if FLAGS[name].present] if strict else []
    if given:
        raise ConfigError(f"--{given[0]} does not apply to --architecture={FLAGS.architecture}")
    num_classes = dataset.num_classes if FLAGS.conditional else 0
    if FLAGS.architecture == "mlp":
        if FLAGS.conditional:
            raise ConfigError("--conditional is implemented for --architecture=dcgan only")
        activation(FLAGS.mlp_activation)
        shape = image_shape or dataset.input_shape
        common_args = {"activation": FLAGS.mlp_activation, "weight_init": FLAGS.mlp_init, "init_gain": FLAGS.init_gain}
        return (MLPGenerator(out_shape=tuple(shape), hidden=_widths("g_hidden"), output_tanh=image_shape is not None,
                             **common_args),
                MLPDiscriminator(hidden=_widths("d_hidden"), **common_args))
    if image_shape is None:
        raise ConfigError(f"--architecture=dcgan needs image data; use --architecture=mlp for {dataset.name}")
    if FLAGS.g_width < 1 or FLAGS.d_width < 1:
        raise ConfigError("--g_width and --d_width must be positive")
    resolution_plan(image_shape[0])
    g = DCGANGenerator(size=image_shape[0], channels=image_shape[2], width=FLAGS.g_width,
                       batch_norm=FLAGS.g_batch_norm, num_classes=num_classes, embed_dim=FLAGS.embed_dim,
                       upsample=FLAGS.upsample)
    d = DCGANDiscriminator(size=image_shape[0], width=FLAGS.d_width, batch_norm=FLAGS.d_batch_norm,
                           spectral_norm=FLAGS.spectral_norm, num_classes=num_classes)
    return g, d


def _evaluator(dataset, with_evaluator: bool):
    from research.errors import ConfigError
    from research.metrics.evaluator import load_or_train

    if not with_evaluator or FLAGS.evaluator == "none" or len(dataset.input_shape) != 3:
        return None
    if FLAGS.evaluator == "auto" and dataset.name not in MNIST_LIKE:
        return None
    if dataset.input_shape[-1] != 1:
        raise ConfigError(f"--evaluator=lenet classifies 1-channel digits; {dataset.name} has "
                          f"{dataset.input_shape[-1]} channels")
    return load_or_train()


def build_task(with_evaluator: bool = True, strict: bool = True):
    """The task described by the flags (validated; raises ConfigError on bad or contradictory input).

    `strict=False` skips the checks for flags given that do not apply (sampling entries adopt every flag of the
    run, so all count as given)."""
    from research import data
    from research.errors import ConfigError
    from research.tasks.gan import GANConfig, GANTask

    cfg = GANConfig(batch_size=FLAGS.batch_size, steps=FLAGS.steps, z_dim=FLAGS.z_dim, loss=FLAGS.gan_loss,
                    penalty=FLAGS.gan_penalty, gp_weight=FLAGS.gp_weight, weight_clip=FLAGS.weight_clip,
                    n_critic=FLAGS.n_critic, unroll_steps=FLAGS.unroll_steps, conditional=FLAGS.conditional,
                    num_eval_samples=FLAGS.num_eval_samples, eval_batch_size=FLAGS.eval_batch_size,
                    grid_size=FLAGS.grid_size)
    cfg.validate()
    for name, value in (("gp_weight", "gradient_penalty"), ("weight_clip", "weight_clip")):
        if strict and FLAGS[name].present and FLAGS.gan_penalty != value:
            raise ConfigError(f"--{name} applies to --gan_penalty={value}, not {FLAGS.gan_penalty}")
    if FLAGS.image_size < 0:
        raise ConfigError(f"--image_size must be >= 0, got {FLAGS.image_size}")
    g_opt, d_opt = common.optimizer_config("g_"), common.optimizer_config("d_")
    if not FLAGS.dataset:
        raise ConfigError("--dataset is required")
    dataset = data.load(FLAGS.dataset, tfds_data_dir=FLAGS.tfds_data_dir)
    image_shape = None
    if len(dataset.input_shape) == 3:
        h, w, c = dataset.input_shape
        size = FLAGS.image_size or h
        image_shape = (size, size if FLAGS.image_size else w, c)
    elif FLAGS.image_size:
        raise ConfigError(f"--image_size applies to image datasets, not {dataset.name}")
    g, d = _models(dataset, image_shape, strict)
    return GANTask(g, d, dataset, g_opt, d_opt, cfg, image_size=FLAGS.image_size,
                   evaluator=_evaluator(dataset, with_evaluator))


def train() -> None:
    from research.loop import train_and_evaluate

    loop = common.loop_config()
    loop.validate()
    task = build_task()
    workdir = common.prepare_workdir(SAMPLE_FLAGS)
    final = train_and_evaluate(task, loop, workdir)
    common.print_final(final, workdir, extra=(f"pictures in {workdir.path / 'images'}",))


def sample() -> None:
    import pathlib

    import jax
    import numpy as np

    from research import parallel
    from research.errors import ConfigError
    from research.loop import restore_latest
    from research.workdir import Workdir

    common.adopt_run_flags(allowed=SAMPLE_FLAGS)
    if FLAGS.num_samples < 1:
        raise ConfigError(f"--num_samples must be positive, got {FLAGS.num_samples}")
    task = build_task(with_evaluator=False, strict=False)
    workdir = Workdir(FLAGS.workdir)
    out = pathlib.Path(FLAGS.output_dir).absolute() if FLAGS.output_dir else workdir.path / "samples"
    inside = out.is_relative_to(workdir.path)
    chief = jax.process_index() == 0
    if inside and chief:
        workdir.lock()  # the workdir is written by one process at a time
    try:
        mesh = parallel.make_mesh()
        loop = common.loop_config()
        replica = FLAGS.replica or 0
        state, step = restore_latest(task, workdir, FLAGS.seed, mesh, loop, replica=replica)
        samples = task.sample(state, FLAGS.num_samples, FLAGS.sample_seed, mesh)
        if not chief:
            return
        out.mkdir(parents=True, exist_ok=True)
        which = f"_replica{replica}" if loop.num_seeds > 1 else ""  # replica i: the run of --seed + i
        stem = out / f"samples_step{step:07d}{which}_seed{FLAGS.sample_seed}"
        np.savez(stem.with_suffix(".npz"), **samples)
        picture = task.picture(samples, limit=FLAGS.num_samples)
        _save_picture(picture, stem.with_suffix(".png"))
        print(f"step {step}: wrote {len(samples['x'])} samples to {stem.with_suffix('.npz')} and "
              f"{stem.with_suffix('.png')}")
    finally:
        if inside and chief:
            workdir.unlock()


def _save_picture(picture, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if isinstance(picture, np.ndarray):
        plt.imsave(path, picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0.0, vmax=1.0)
    else:
        picture.savefig(path, dpi=100)
        plt.close(picture)


def evaluator() -> None:
    """Train (once) or load the evaluator; print its test accuracy and the metrics of real images."""
    import json

    import numpy as np

    from research import data
    from research.metrics.evaluator import load_or_train

    ev = load_or_train()
    ds = data.load(ev.cfg.dataset)
    test = ds.split("test")["x"]
    train = ds.split("train")["x"][np.random.default_rng(0).permutation(len(ds.split("train")["x"]))[:len(test)]]
    real_features = ev.predict(test)[0]
    print(json.dumps({"evaluator": ev.info, "real_train_vs_test": ev.report(train, real_features)}, indent=2))


def main() -> None:
    common.setup_runtime()
    {"train": train, "sample": sample, "evaluator": evaluator}[FLAGS.mode]()


if __name__ == "__main__":
    common.run(main)
