"""Training curves of finished or running runs, side by side, from their metrics.jsonl.

    python -m launch.curves --workdir=/tmp/runs/adding_lstm,/tmp/runs/adding_gru --metric=mse --out=/tmp/adding.png
"""

from __future__ import annotations

import os

from absl import app, flags

from launch.cli import fail, parse_flags

FLAGS = flags.FLAGS
flags.DEFINE_list("workdir", None, "Run directories, comma separated.")
flags.DEFINE_string("metric", "loss", "Test metric to draw (its baseline_<metric>, if logged, as a dashed line).")
flags.DEFINE_string("train_metric", "loss", "Train metric to draw.")
flags.DEFINE_bool("log_scale", True, "Logarithmic y axis.")
flags.DEFINE_string("title", "", "Figure title (default: the metric).")
flags.DEFINE_string("out", None, "PNG file to write.")


def main(argv: list[str]) -> None:
    from research.errors import ConfigError
    from research.workdir import METRICS_FILE
    from research.writers import save_figure

    try:
        if not FLAGS.workdir or not FLAGS.out:
            raise ConfigError("--workdir and --out are required")
        missing = [w for w in FLAGS.workdir if not os.path.exists(os.path.join(w, METRICS_FILE))]
        if missing:
            raise ConfigError(f"{missing[0]} holds no {METRICS_FILE}")
        from research.curves import figure

        fig = figure(FLAGS.workdir, FLAGS.metric, FLAGS.train_metric, FLAGS.log_scale, FLAGS.title)
        print(f"wrote {save_figure(os.path.abspath(FLAGS.out), fig)}")
    except ConfigError as e:
        fail(str(e), e.exit_code)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
