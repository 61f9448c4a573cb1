"""8 seeds in one program (`--num_seeds=8`) vs 8 sequential runs, whole-process wall clock including start-up.
Target: >= 5x."""

from __future__ import annotations

import time

from benchmarks.timing import REPO, launch, table

CASES = {
    "mlp digits (quickstart, 500 steps)": ("mlp", ["--flagfile=experiments/mlp/quickstart.flags", "--steps=500",
                                                    "--eval_every=0", "--checkpoint_every=500"]),
    "gan ring8 (2,000 steps)": ("gan", ["--flagfile=experiments/gan/ring8_gan.flags", "--steps=2000",
                                        "--eval_every=0", "--checkpoint_every=2000"]),
}


def main(repeats: int = 1, seeds: int = 8) -> str:
    rows = []
    for name, (module, args) in CASES.items():
        if not (REPO / args[0].split("=", 1)[1]).exists():
            continue
        t = time.perf_counter()
        for s in range(seeds):
            launch(module, [*args, f"--seed={s}"])
        sequential = time.perf_counter() - t
        t = time.perf_counter()
        launch(module, [*args, f"--num_seeds={seeds}"])
        vectorised = time.perf_counter() - t
        rows.append([name, sequential, vectorised, sequential / vectorised])
    return table(f"{seeds} seeds: sequential runs vs one --num_seeds={seeds} run (wall s, target >= 5x)",
                 ["case", "sequential s", "vmapped s", "speed-up"], rows)


if __name__ == "__main__":
    main()
