"""Regression metrics on host arrays, in the units of the targets given."""

import numpy as np


def regression_report(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    predictions, targets = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    mse = float(np.mean((predictions - targets) ** 2))
    total = float(np.sum((targets - targets.mean()) ** 2))
    r2 = 1.0 - float(np.sum((predictions - targets) ** 2)) / total if total > 0 else float("nan")
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "r2": r2}
