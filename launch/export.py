"""Export a trained run (any family) to a portable artifact: `jax.export` functions + parameters + manifest.

    python -m launch.export --workdir=/tmp/runs/mlp --out=/tmp/exports/mlp
    python -m launch.export --workdir=/tmp/runs/gan --out=/tmp/exports/gan --step=1000 --platforms=cpu,cuda
    python -m launch.export --workdir=/tmp/runs/mlp --out=/tmp/exports/mlp_tf --format=saved_model  # needs .[tf]

The artifact's layout, entries and why the parameters sit beside the functions: research/export.py and
docs/deploy.md. Serve it with `python -m launch.serve --model=DIR`.
"""

import pathlib

from absl import flags

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Directory to write the export to (new or empty, or an export with --overwrite).")
flags.DEFINE_integer("step", None, "Export the checkpoint at this step (default: the latest).")
flags.DEFINE_list("platforms", ["cpu"], "Platforms to export for, comma separated: cpu, cuda, rocm, tpu (several: "
                  "one multi-platform artifact).")
flags.DEFINE_enum("format", "jax", ["jax", "saved_model"], "jax: jax.export artifacts; saved_model: also a TF "
                  "SavedModel of the same functions in <out>/saved_model/1 (needs pip install -e \".[tf]\").")
flags.adopt_module_key_flags(common)


def main() -> None:
    from research.errors import ConfigError
    from research.export import check_out, check_platforms

    if not FLAGS.workdir:
        raise ConfigError("--workdir is required")
    if not FLAGS.out:
        raise ConfigError("--out is required")
    platforms = check_platforms(FLAGS.platforms)  # the cheap refusals first, before the run is loaded
    check_out(pathlib.Path(FLAGS.out).absolute(), FLAGS.overwrite)

    from research.export import export_run
    from research.workdir import Workdir

    manifest = export_run(Workdir(FLAGS.workdir), FLAGS.out, step=FLAGS.step, platforms=platforms,
                          replica=FLAGS.replica or 0, overwrite=FLAGS.overwrite, fmt=FLAGS.format)
    source = manifest["source"]
    print(f"exported {manifest['family']} step {source['step']} of {source['workdir']} for "
          f"{','.join(manifest['platforms'])} (params_sha256 {source['params_sha256'][:16]}...)")
    for name, entry in manifest["entries"].items():
        sig = lambda ts: ", ".join(f"{t['name']} {t['dtype']}{t['shape']}" for t in ts)
        print(f"  {name}({sig(entry['inputs'])}) -> {sig(entry['outputs'])}")
    if "saved_model" in manifest:
        print(f"  TF SavedModel: {manifest['saved_model']['dir']} (signatures "
              f"{', '.join(manifest['saved_model']['signatures'])})")
    print(f"wrote {FLAGS.out}; serve it with: python -m launch.serve --model={FLAGS.out}")


if __name__ == "__main__":
    common.run(main)
