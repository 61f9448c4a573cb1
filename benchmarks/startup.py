"""Time from the command to the first completed training step, for each quickstart flagfile: cold (empty
compilation cache) and warm (the same cache again). Whole-process wall time, imports and data loading included."""

from __future__ import annotations

import pathlib
import tempfile

from benchmarks.timing import REPO, launch, table

QUICKSTARTS = {"mlp": "experiments/mlp/quickstart.flags", "gan": "experiments/gan/quickstart.flags",
               "autoencoder": "experiments/autoencoder/quickstart.flags", "rnn": "experiments/rnn/quickstart.flags"}


def main(repeats: int = 1, steps: int = 20) -> str:
    rows = []
    for module, flagfile in QUICKSTARTS.items():
        if not (REPO / flagfile).exists():
            rows.append([module, "missing", "", ""])
            continue
        with tempfile.TemporaryDirectory(prefix="xla-cache-") as cache:
            args = [f"--flagfile={flagfile}", f"--steps={steps}", f"--compilation_cache_dir={cache}",
                    "--eval_every=0", f"--checkpoint_every={steps}", f"--log_every={steps}"]
            cold = launch(module, args)["to_first_step"]
            warm = min(launch(module, args)["to_first_step"] for _ in range(max(repeats, 1)))
            rows.append([module, cold, warm, cold / warm])
            assert pathlib.Path(cache).exists()
    return table("Command to first training step (s): cold vs warm compilation cache",
                 ["quickstart", "cold s", "warm s", "cold / warm"], rows)


if __name__ == "__main__":
    main()
