"""Reports built from the ledger alone (no workdir is read): results.csv, results.md and plots/<metric>.png.

results.csv has one row per run (grid point, or search trial × seed) with its status, attempts, axis labels,
seed, metrics, trial_seconds (the trial process's wall time), host, workdir, axis flags and error. With vectorised
seeds a row is still one (axis combination, seed): its metrics are the seed's own (final.json["seeds"]), while
trial_seconds, workdir, host, attempts and a failure belong to the one trial that trained all the block's seeds.
results.md has one row per axis combination (or search trial) with n (completed seeds), failures and every metric
as mean ± sample standard deviation (ddof=1) over seeds; a reproduction's paper numbers stand beside ours. Plots
(matplotlib, Agg) show each seed's value, the mean and ± std per combination, and the paper's number if any.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from research.sweep.ledger import Ledger, blocks, point_status, retries_used, seed_view
from research.sweep.spec import metric, point_key

STATUS_ORDER = ("done", "failed", "running", "waiting", "retry", "new")


# ------------------------------------------------------------------------------------------------- numbers
def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (ddof=1; None for fewer than 2 values) of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None, None, 0
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None, len(xs)
    if min(xs) == max(xs):  # e.g. a value shared by a vectorised trial's seeds: exactly 0, not rounding noise
        return xs[0], 0.0, len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)), len(xs)


def fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"


# ----------------------------------------------------------------------------------------------- collection
def collect(ledger: Ledger, record: Mapping[str, Any], max_retries: int = 2) -> list[dict[str, Any]]:
    """One row per run, in spec order for a grid (points never queued appear as status 'new')."""
    from optuna.trial import TrialState

    metrics = list(record.get("metrics", []))
    groups = ledger.by_key()
    search = record.get("search") is not None
    if not search and record.get("vectorize_seeds"):
        return _collect_blocks(groups, record, max_retries)
    if search:
        keys = list(groups)
    else:
        axes = record.get("axes", [])
        keys = [point_key(dict(zip([a for a, _ in axes], combo, strict=True)), seed)
                for combo in itertools.product(*(labels for _, labels in axes)) for seed in record.get("seeds", [])]
        keys += [k for k in groups if k not in set(keys)]  # points of an older, larger grid
    rows = []
    for key in keys:
        trials = [t for t in groups.get(key, []) if t.state != TrialState.PRUNED]
        status = point_status(trials, max_retries)
        rep = next((t for t in trials if t.state == TrialState.COMPLETE), trials[-1] if trials else None)
        params = {} if rep is None else (dict(rep.params) or dict(rep.system_attrs.get("fixed_params", {})))
        if rep is None and not search:
            params = _parse_key(key)
        attrs = {} if rep is None else rep.user_attrs
        base = _base(key, rep, trials, status)
        results = attrs.get("results") or []
        if search:
            labels = {k: v for k, v in params.items()}
            pending = [{"seed": s} for s in record.get("seeds", [])] if record.get("vectorize_seeds") else [{}]
            for r in results or pending:  # a vectorised trial without results: each of its seeds
                rows.append({**base, "labels": labels, "seed": r.get("seed"), "workdir": r.get("workdir", ""),
                             "trial_seconds": r.get("seconds"),
                             "metrics": {m: metric(r["final"], m) if "final" in r else None for m in metrics},
                             "completed": status == "done" and "final" in r})
        else:
            labels = {k: v for k, v in params.items() if k != "seed"}
            r = results[0] if results and status == "done" else {}
            rows.append({**base, "labels": labels, "seed": params.get("seed"),
                         "workdir": (attrs.get("workdirs") or [""])[0], "trial_seconds": attrs.get("wall_seconds"),
                         "metrics": {m: metric(r["final"], m) if r else None for m in metrics},
                         "completed": status == "done"})
    return rows


def _base(key: str, rep: Any, trials: Sequence[Any], status: str) -> dict[str, Any]:
    """The columns of a row that come from the trial that represents it (None: never tried)."""
    from optuna.trial import TrialState

    attrs = {} if rep is None else rep.user_attrs
    error = attrs.get("error") or attrs.get("lost") or ""
    if status == "failed" and rep is not None and attrs.get("retriable", True):
        error = f"gave up after {retries_used(trials)} lost attempts: {error}"
    return {"key": key, "trial": None if rep is None else rep.number, "status": status,
            "attempts": sum(1 for t in trials if t.state != TrialState.WAITING),
            "host": attrs.get("hostname", ""), "error": error, "log_tail": attrs.get("log_tail", ""),
            "flags": " ".join(f"--{k}={v}" for k, v in (attrs.get("flags") or {}).items())}


def _collect_blocks(groups: Mapping[str, Sequence[Any]], record: Mapping[str, Any],
                    max_retries: int) -> list[dict[str, Any]]:
    """Vectorised grid: one row per (axis combination, seed), its metrics from its block's per-seed results."""
    from optuna.trial import TrialState

    axes = record.get("axes", [])
    combos = [dict(zip([a for a, _ in axes], combo, strict=True))
              for combo in itertools.product(*(labels for _, labels in axes))]
    rows = []
    for labels, seed, status, block in seed_view(blocks(groups, max_retries), combos, record.get("seeds", [])):
        trials = block.trials if block else ()
        rep = next((t for t in trials if t.state == TrialState.COMPLETE), trials[-1] if trials else None)
        attrs = {} if rep is None else rep.user_attrs
        mine = next((r for r in attrs.get("results") or [] if r.get("seed") == seed and "final" in r), None)
        done = status == "done" and mine is not None
        rows.append({**_base(point_key(labels, seed), rep, trials, status), "labels": labels, "seed": seed,
                     "block": None if block is None else block.key,
                     "workdir": (attrs.get("workdirs") or [""])[0], "trial_seconds": attrs.get("wall_seconds"),
                     "metrics": {m: metric(mine["final"], m) if done else None for m in record.get("metrics", [])},
                     "completed": done})
    return rows


def _parse_key(key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in key.split(","):
        k, _, v = part.partition("=")
        out[k] = int(v) if k == "seed" else v
    return out


def groups_of(rows: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows grouped by axis combination (grid, spec order) or by trial (search, best first)."""
    search = record.get("search") is not None
    out: dict[Any, dict[str, Any]] = {}
    for r in rows:
        gid = r["key"] if search else tuple(r["labels"].get(a) for a, _ in record.get("axes", []))
        g = out.setdefault(gid, {"labels": r["labels"], "trial": r["trial"], "rows": []})
        g["rows"].append(r)
    groups = list(out.values())
    for g in groups:
        done = [r for r in g["rows"] if r["completed"]]
        g["n"] = len(done)
        g["failed"] = sum(1 for r in g["rows"] if r["status"] == "failed")
        g["unfinished"] = sum(1 for r in g["rows"] if r["status"] not in ("done", "failed"))
        g["stats"] = {m: mean_std([r["metrics"][m] for r in done]) for m in record.get("metrics", [])}
    if search:
        sign = -1 if record.get("direction") == "maximize" else 1
        objective = record.get("objective")
        groups.sort(key=lambda g: (g["stats"][objective][0] is None, sign * (g["stats"][objective][0] or 0)))
    return groups


def _paper_lookup(record: Mapping[str, Any]) -> dict[tuple, dict[str, float]]:
    paper = record.get("paper") or {}
    axes = [a for a, _ in record.get("axes", [])]
    return {tuple(labels.get(a) for a in axes): values for labels, values in paper.get("rows", [])}


# ------------------------------------------------------------------------------------------------- writing
def csv_text(rows: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> str:
    label_cols = [a for a, _ in record.get("axes", [])] if record.get("search") is None else \
        list(record["search"]["params"])
    metrics = list(record.get("metrics", []))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "trial", "status", "attempts", *label_cols, "seed", *metrics, "trial_seconds", "host",
                "workdir", "flags", "error"])
    for r in rows:
        w.writerow([r["key"], r["trial"], r["status"], r["attempts"], *(r["labels"].get(c, "") for c in label_cols),
                    r["seed"], *("" if r["metrics"][m] is None else repr(r["metrics"][m]) for m in metrics),
                    "" if r["trial_seconds"] is None else f"{r['trial_seconds']:.1f}", r["host"], r["workdir"],
                    r["flags"], r["error"]])
    return buf.getvalue()


def markdown(rows: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> str:
    groups = groups_of(rows, record)
    metrics = list(record.get("metrics", []))
    search = record.get("search") is not None
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUS_ORDER}
    files = ", ".join(record.get("flagfiles", [])) or "no base flagfile"
    lines = [f"# Sweep `{record.get('name')}`", ""]
    if record.get("description"):
        lines += [record["description"], ""]
    runs = f"{len(rows)} run{'s' if len(rows) != 1 else ''}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    vector = ""
    if record.get("vectorize_seeds"):
        vector = (" (vectorised: each " + ("trial" if search else "axis combination") + "'s seeds train in one "
                  "`--num_seeds` process, which shares top-level values such as wall_seconds)")
    lines += [f"`{record.get('launch')}` with {files}; seeds {', '.join(map(str, record.get('seeds', [])))}"
              f"{vector}; {runs}.",
              "Metrics: mean ± sample standard deviation (ddof=1) over the completed seeds (n); "
              "a single seed shows its value.", ""]
    paper = _paper_lookup(record)
    paper_label = (record.get("paper") or {}).get("label", "paper")
    with_paper = [m for m in metrics if any(m in v for v in paper.values())]
    if search:
        label_cols = list(record["search"]["params"])
        head = ["trial", *label_cols]
    else:
        label_cols = [a for a, _ in record.get("axes", [])]
        head = list(label_cols)
    head += ["n", "failed"] + [c for m in metrics for c in ((f"{m} ({paper_label})", f"{m} (ours)")
                                                            if m in with_paper else (m,))]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        combo = tuple(g["labels"].get(a) for a in label_cols)
        cells = ([str(g["trial"])] if search else []) + [_label(g["labels"].get(c)) for c in label_cols]
        cells += [str(g["n"]), str(g["failed"]) + (f" (+{g['unfinished']} unfinished)" if g["unfinished"] else "")]
        for m in metrics:
            if m in with_paper:
                value = paper.get(combo, {}).get(m)
                cells.append("—" if value is None else f"{value:.4g}")
            cells.append(fmt(*g["stats"][m][:2]))
        lines.append("| " + " | ".join(cells) + " |")
    if record.get("paper"):
        source = record["paper"].get("source") or "see the spec"
        lines += ["", f"{paper_label[:1].upper() + paper_label[1:]}: {source}."]
    failed: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:  # a failed vectorised trial is one entry, though each of its seeds counts as failed
        if r["status"] == "failed":
            failed.setdefault((r["trial"], r.get("block") or r["key"]), []).append(r)
    if failed:
        lines += ["", "Failed runs (the last lines of each log are in the ledger and in results.csv):", ""]
        for (trial, key), rs in failed.items():
            last = (rs[0]["log_tail"].strip().splitlines() or [""])[-1]
            seeds = f", seeds {', '.join(str(r['seed']) for r in rs)}" if rs[0].get("block") else ""
            lines.append(f"- `{key}` (trial {trial}{seeds}): {rs[0]['error']}" + (f" — `{last[:200]}`" if last else ""))
    processes = {(r["trial"], r["workdir"]): r["trial_seconds"] for r in rows
                 if r["completed"] and r["trial_seconds"] is not None}  # a vectorised trial's seeds share one
    walls = list(processes.values())
    done = sum(1 for r in rows if r["completed"])
    lines += ["", f"Trial wall time: {sum(walls):.0f} s in total over {len(walls)} trial process(es) for {done} "
                  f"completed run(s) (median {sorted(walls)[len(walls) // 2]:.0f} s)." if walls else "",
              f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} from the ledger."]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _label(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def plot(rows: Sequence[Mapping[str, Any]], record: Mapping[str, Any], directory: str) -> list[str]:
    """One PNG per metric: per-seed dots, mean ± std bars per combination (grid) or vs trial and params (search)."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    groups = groups_of(rows, record)
    paper = _paper_lookup(record)
    axes_names = [a for a, _ in record.get("axes", [])]
    paths = []
    for m in record.get("metrics", []):
        if record.get("search") is not None:
            params = list(record["search"]["params"])
            fig, axs = plt.subplots(1, 1 + len(params), figsize=(4 * (1 + len(params)), 3.5), squeeze=False)
            pts = [(g["trial"], g["labels"], g["stats"][m][0]) for g in groups if g["stats"][m][0] is not None]
            axs[0, 0].scatter([p[0] for p in pts], [p[2] for p in pts], s=14)
            axs[0, 0].set_xlabel("trial")
            for ax, name in zip(axs[0, 1:], params, strict=True):
                xs = [(p[1].get(name), p[2]) for p in pts if isinstance(p[1].get(name), int | float)]
                if xs:
                    ax.scatter([x for x, _ in xs], [y for _, y in xs], s=14)
                    if min(x for x, _ in xs) > 0 and max(x for x, _ in xs) / min(x for x, _ in xs) > 50:
                        ax.set_xscale("log")
                else:
                    names = sorted({str(p[1].get(name)) for p in pts})
                    ax.scatter([names.index(str(p[1].get(name))) for p in pts], [p[2] for p in pts], s=14)
                    ax.set_xticks(range(len(names)), names)
                ax.set_xlabel(name)
            axs[0, 0].set_ylabel(m)
        else:
            fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(groups) + 2), 3.8))
            ax.set_xlim(-0.6, len(groups) - 0.4)
            axs = [[ax]]
            names = []
            for i, g in enumerate(groups):
                names.append("/".join(str(g["labels"].get(a)) for a in axes_names) or "all")
                vals = [r["metrics"][m] for r in g["rows"] if r["completed"] and r["metrics"][m] is not None]
                mean, std, _ = g["stats"][m]
                if mean is not None:
                    ax.errorbar(i, mean, yerr=std or 0.0, fmt="o", color="#08519c", capsize=5, zorder=2,
                                label="mean ± std")
                elif g["failed"]:
                    ax.annotate("failed", (i, 0.5), xycoords=("data", "axes fraction"), ha="center", color="#cb181d")
                ax.scatter([i + 0.15] * len(vals), vals, color="#636363", s=10, zorder=3, label="seeds")
                value = paper.get(tuple(g["labels"].get(a) for a in axes_names), {}).get(m)
                if value is not None:
                    ax.scatter([i], [value], marker="x", color="#cb181d", s=60, zorder=4,
                               label=(record.get("paper") or {}).get("label", "paper"))
            ax.set_xticks(range(len(names)), names, rotation=30 if sum(map(len, names)) > 40 else 0, ha="right"
                          if sum(map(len, names)) > 40 else "center")
            ax.set_ylabel(m)
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                seen = dict(zip(labels, handles, strict=True))
                ax.legend(seen.values(), seen.keys(), fontsize=8)
        axs[0][0].set_title(f"{record.get('name')}: {m}")
        fig.tight_layout()
        path = os.path.join(directory, re.sub(r"[^A-Za-z0-9_.+-]", "_", m) + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write(sweep_dir: str, ledger: Ledger, record: Mapping[str, Any] | None = None,
          max_retries: int = 2) -> tuple[str, list[dict[str, Any]]]:
    """Write results.csv, results.md and plots/ into the sweep dir; returns the markdown and the rows."""
    record = record or ledger.record
    rows = collect(ledger, record, max_retries)
    os.makedirs(sweep_dir, exist_ok=True)
    _write(os.path.join(sweep_dir, "results.csv"), csv_text(rows, record))
    text = markdown(rows, record)
    _write(os.path.join(sweep_dir, "results.md"), text)
    plot(rows, record, os.path.join(sweep_dir, "plots"))
    return text, rows
