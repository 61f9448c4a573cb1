"""Training steps/s with `--steps_per_call=100` vs 1: the 2-D ring GAN and the adding problem (the issue's
cases), and the digits MLP quickstart, whose step is so small that dispatch dominates on a CPU. Steps/s is
measured between the first and last log lines of each run (compilation excluded). Target: >= 10x."""

from __future__ import annotations

from benchmarks.timing import REPO, launch, table

CASES = {
    "gan ring8 (MLP G/D, batch 512)": ("gan", ["--flagfile=experiments/gan/ring8_gan.flags"]),
    "adding T=50 (LSTM 64, batch 64)": ("rnn", ["--flagfile=experiments/rnn/quickstart.flags"]),
    "mlp digits (64-256-256-10, batch 64)": ("mlp", ["--flagfile=experiments/mlp/quickstart.flags"]),
}


def main(repeats: int = 1, steps: int = 3000) -> str:
    rows = []
    for name, (module, args) in CASES.items():
        if not (REPO / args[0].split("=", 1)[1]).exists():
            continue
        common = [*args, f"--steps={steps}", "--log_every=500", "--eval_every=0", f"--checkpoint_every={steps}"]
        rate = {k: max(launch(module, [*common, f"--steps_per_call={k}"])["steps_per_second"]
                       for _ in range(max(repeats, 1))) for k in (1, 100)}
        rows.append([name, rate[1], rate[100], rate[100] / rate[1]])
    return table("steps/s: --steps_per_call=100 vs 1 (target >= 10x)",
                 ["case", "K=1 steps/s", "K=100 steps/s", "speed-up"], rows)


if __name__ == "__main__":
    main()
