"""Evaluators: what turns a train state into metrics and pictures, apart from the training math.

Every evaluator has `evaluate(state, ctx) -> Evaluation` and returns its results to the loop, which writes
them through the workdir (`research/writers.py`); no evaluator writes a file. An evaluator may set `every`
(evaluate every N steps; 0 or absent: the loop's `--eval_every`). The final evaluation runs them all.

    supervised.py       classification / regression reports, per-step sequence reports, the data's baselines
    reconstruction.py   autoencoders against an exact PCA baseline; reconstructions, interpolations, samples
    gan.py              samples, Fréchet distance and scores from a classifier's features, mode coverage, grids
    language_model.py   validation bits per character and perplexity; sampled text
    ema.py              any evaluator again on the parameters' moving average (--ema_decay), names prefixed ema_
"""

from research.evaluators.base import EvalContext, Evaluation, Evaluator, merge

__all__ = ["EvalContext", "Evaluation", "Evaluator", "merge"]
