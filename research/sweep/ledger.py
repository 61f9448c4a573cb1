"""The sweep's ledger: an Optuna study in a real storage, shared by every worker on every machine.

Storage. `journal:PATH` (Optuna's JournalStorage on a JournalFileBackend; the default, `<sweep_dir>/ledger.journal`)
or any SQLAlchemy URL such as `postgresql://user:pass@host/db` (Optuna's RDBStorage). SQLite is refused: with
several worker processes its `SELECT ... FOR UPDATE` is a no-op, and we measured two processes popping the same
queued trial (docs/sweeps.md); the journal's append-only log under a file lock, and PostgreSQL's row locks, pop
each trial exactly once.

Exactly once. The grid is a queue of WAITING trials (one per point, `key` = axis labels and seed). A worker
claims a trial by the storage's atomic WAITING -> RUNNING transition. Enqueueing is idempotent in effect: a
point may end up queued twice (two workers topping up at once), so a claimed trial runs only if no
lower-numbered trial of the same key is WAITING, RUNNING or COMPLETE; otherwise it is pruned as a duplicate.
Trial states only move forward, so at most one trial per point ever runs at a time, and none after one
completed.

Vectorised seeds. With `vectorize_seeds = true` a grid's ledger entry is a block: an axis combination and a run
of consecutive seeds (`key` "axis=label,...,seeds=0-2", user attributes `labels` and `seeds`), trained by one
`--seed=0 --num_seeds=3` process. The grid is queued as one block per combination; seeds added to the spec later
form new blocks of only the missing seeds. A block runs only if no lower-numbered block of the same combination
with an overlapping seed is WAITING, RUNNING or COMPLETE. Reports read one row per (combination, seed): the seed's
status is its best block's (done, running, waiting, retry, failed), so a failed block is a failure of each seed.

Failures. A trial that exits non-zero is FAIL with `retriable: false`, its exit code and the last lines of its
log (re-run with `--retry_failed` to try such points again). A worker that dies leaves its trial RUNNING; any
worker marks it FAIL (`lost`) when its heartbeat is older than the grace period or, on the same host, when the
worker's pid is gone, and the point is queued again (at most `max_retries` times). A trial killed by a signal
or interrupted is likewise retried.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from research.errors import ConfigError
from research.processes import host_id, pid_alive
from research.sweep.spec import Point, Spec, consecutive_runs, point_key

JOURNAL_FILE = "ledger.journal"
_SECRET_KEY = re.compile(r"pass|secret|token|key", re.I)


# ---------------------------------------------------------------------------------------------------- storage
def storage_url(url: str | None, sweep_dir: str) -> str:
    """Normalise --storage: default journal file in the sweep dir, bare paths are journal files."""
    if not url:
        return "journal:" + os.path.abspath(os.path.join(sweep_dir, JOURNAL_FILE))
    if url.startswith("journal:"):
        return "journal:" + os.path.abspath(url[len("journal:"):])
    if "://" not in url:
        return "journal:" + os.path.abspath(url)
    if url.split(":", 1)[0].split("+")[0] == "sqlite":
        raise ConfigError("SQLite is not a safe ledger for several worker processes (two can claim one trial); "
                          "use the default journal file, journal:PATH on a shared file system, or postgresql://")
    return url


def redact(url: str) -> str:
    """The URL with its password (and secret-looking query values) replaced by ***: safe for logs and files."""
    if url.startswith("journal:"):
        return url
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:
        return re.sub(r"//[^@/]*@", "//***@", url)
    u = u.set(query={k: ("REDACTED" if _SECRET_KEY.search(k) else v) for k, v in u.query.items()})
    return u.render_as_string(hide_password=True).replace("REDACTED", "***")


def secrets(url: str) -> list[str]:
    """The secret strings inside a storage URL (to scrub from any message)."""
    if url.startswith("journal:"):
        return []
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:
        m = re.search(r"//[^:/@]*:([^@/]*)@", url)
        return [m.group(1)] if m and m.group(1) else []
    out = [u.password] if u.password else []
    for k, v in u.query.items():
        if _SECRET_KEY.search(k):
            out += [v] if isinstance(v, str) else list(v)
    return [s for s in out if s] + [quote(s, safe="") for s in out if s and quote(s, safe="") != s]


def scrub(text: str, hidden: Iterable[str]) -> str:
    for s in hidden:
        text = text.replace(s, "***")
    return text


def open_storage(url: str):
    """An Optuna storage for a normalised URL (see `storage_url`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal:"):]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except ImportError as e:
        dialect = url.split(":", 1)[0].split("+", 1)[0]
        driver = _DRIVERS.get(dialect, f"a Python database driver for {dialect}:// URLs")
        raise ConfigError(f"no database driver for {redact(url)}: install {driver} ({e.__class__.__name__}: "
                          f"{_first_line(e, url)})") from None
    except Exception as e:
        raise ConfigError(f"cannot open the ledger {redact(url)}: {_first_line(e, url)}") from None


_DRIVERS = {"postgresql": "psycopg (pip install 'psycopg[binary]')",
            "mysql": "PyMySQL (pip install pymysql) and write the URL as mysql+pymysql://..."}


def _first_line(e: BaseException, url: str) -> str:
    text = str(e).strip()
    return scrub(text.splitlines()[0] if text else type(e).__name__, secrets(url))


@dataclasses.dataclass
class Claim:
    """A trial this worker owns: what to run and where."""

    trial_id: int
    number: int
    key: str
    name: str                        # directory / log name
    flags: dict[str, str]
    flagfiles: list[str]
    runs: list[tuple[int, str]]      # (seed, workdir relative to the sweep dir); the first seed if vectorised
    params: dict[str, Any]
    attempt: int
    num_seeds: int | None = None     # vectorised: each run trains seeds seed .. seed+num_seeds-1 in one process


# ----------------------------------------------------------------------------------------------- the ledger
def point_status(trials: Sequence[Any], max_retries: int) -> str:
    """done / running / waiting / new (never tried) / retry (lost, will be retried) / failed, for one key."""
    from optuna.trial import TrialState

    states = {t.state for t in trials}
    if TrialState.COMPLETE in states:
        return "done"
    if TrialState.RUNNING in states:
        return "running"
    if TrialState.WAITING in states:
        return "waiting"
    fails = [t for t in trials if t.state == TrialState.FAIL]
    if not fails:
        return "new"
    if not fails[-1].user_attrs.get("retriable", True):
        return "failed"
    return "retry" if retries_used(trials) <= max_retries else "failed"


@dataclasses.dataclass(frozen=True)
class Block:
    """A vectorised grid entry: an axis combination's run of consecutive seeds, its trials (duplicates pruned
    as such left out) and their status."""

    key: str
    labels: dict[str, str]
    seeds: tuple[int, ...]
    trials: tuple[Any, ...]
    status: str

    @property
    def number(self) -> int:
        return self.trials[0].number if self.trials else -1


_SEED_PRIORITY = ("done", "running", "waiting", "retry", "failed")


def blocks(groups: Mapping[str, Sequence[Any]], max_retries: int) -> list[Block]:
    """The vectorised blocks among the ledger's entries (grouped by key), with their status."""
    from optuna.trial import TrialState

    out = []
    for key, ts in groups.items():
        attrs = ts[0].user_attrs
        labels, seeds = attrs.get("labels"), attrs.get("seeds")
        if not isinstance(labels, dict) or not isinstance(seeds, list):
            continue
        live = tuple(t for t in ts if t.state != TrialState.PRUNED)
        out.append(Block(key, dict(labels), tuple(seeds), live, point_status(live, max_retries)))
    return out


def seed_view(all_blocks: Sequence[Block], combos: Sequence[Mapping[str, str]], seeds: Sequence[int],
              extra: bool = True) -> list[tuple[dict[str, str], int, str, Block | None]]:
    """(labels, seed, status, the block that decides it) per axis combination and seed of a vectorised grid.

    A seed's status is the best among the blocks holding it (done > running > waiting > retry > failed), "new"
    if none does. With `extra`, seeds that ran in an older, larger grid are listed after the spec's.
    """
    out = []
    for labels in combos:
        labels = dict(labels)
        mine = [b for b in all_blocks if b.labels == labels and b.status in _SEED_PRIORITY]
        more = sorted({s for b in mine for s in b.seeds} - set(seeds)) if extra else []
        for seed in [*seeds, *more]:
            holding = [b for b in mine if seed in b.seeds]
            best = min(holding, key=lambda b: (_SEED_PRIORITY.index(b.status), b.number)) if holding else None
            out.append((labels, seed, "new" if best is None else best.status, best))
    return out


def retries_used(trials: Sequence[Any]) -> int:
    """Attempts lost to dead workers or signals (interruptions by the user do not count)."""
    from optuna.trial import TrialState

    return sum(1 for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("retriable", True)
               and not t.user_attrs.get("interrupted"))


class Ledger:
    """One sweep's Optuna study: queueing, claiming, heartbeats, stale detection and results."""

    def __init__(self, storage, study, spec: Spec | None = None, sampler_seed: int = 0):
        self.storage, self.study, self.spec = storage, study, spec
        self.host = host_id()
        self._sampler_seed = sampler_seed

    # ---- opening
    @classmethod
    def open(cls, url: str, spec: Spec, worker_index: int = 0) -> Ledger:
        """Create or load the study named after the spec; refuse a study that holds another sweep."""
        import optuna

        storage = open_storage(url)
        try:
            study = optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True,
                                        direction=spec.direction, sampler=optuna.samplers.RandomSampler(seed=0))
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"cannot open the ledger {redact(url)}: {_first_line(e, url)}") from None
        identity = json.loads(json.dumps(spec.identity()))
        attrs = study.user_attrs
        if "identity" not in attrs:
            study.set_user_attr("identity", identity)
        elif attrs["identity"] != identity:
            raise ConfigError(f"the ledger {redact(url)} holds a sweep named {spec.name!r} with a different "
                              f"{_first_difference(attrs['identity'], identity)}; use a new --sweep_dir (and "
                              f"storage), or set another `name` in the spec")
        record = json.loads(json.dumps(spec.record()))
        if attrs.get("record") != record:
            study.set_user_attr("record", record)
        ledger = cls(storage, study, spec)
        if spec.search is not None:
            seed = spec.search.seed + worker_index + len(study.get_trials(deepcopy=False))
            ledger.study.sampler = (optuna.samplers.TPESampler(seed=seed) if spec.search.sampler == "tpe"
                                    else optuna.samplers.RandomSampler(seed=seed))
        return ledger

    @classmethod
    def load(cls, url: str, name: str) -> Ledger:
        """An existing study, for reports."""
        import optuna

        storage = open_storage(url)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise ConfigError(f"the ledger {redact(url)} has no sweep named {name!r}") from None
        return cls(storage, study)

    @property
    def record(self) -> dict[str, Any]:
        return self.study.user_attrs.get("record", {})

    def trials(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def by_key(self, trials: Iterable[Any] | None = None) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for t in sorted(self.trials() if trials is None else trials, key=lambda t: t.number):
            key = t.user_attrs.get("key")
            if key is not None:
                out.setdefault(key, []).append(t)
        return out

    def statuses(self, max_retries: int) -> dict[str, str]:
        """The status of every run the spec asks for: per grid point and seed (vectorised or not), or per search
        trial."""
        groups = self.by_key()
        if self.spec.search is not None:
            return {key: point_status(ts, max_retries) for key, ts in groups.items()}
        if self.spec.vectorize_seeds:
            view = seed_view(blocks(groups, max_retries), self.spec.combos(), self.spec.seeds, extra=False)
            return {point_key(labels, seed): status for labels, seed, status, _ in view}
        return {p.key: point_status(groups.get(p.key, []), max_retries) for p in self.spec.points()}

    # ---- queueing
    def top_up(self, max_retries: int, retry_failed: bool = False) -> int:
        """Queue every point that needs a run: never tried, lost (within max_retries), or failed if asked."""
        groups = self.by_key()
        if self.spec.search is None and self.spec.vectorize_seeds:
            return self._top_up_blocks(groups, max_retries, retry_failed)
        points: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        if self.spec.search is None:
            points = [(p.key, self._grid_params(p), {"key": p.key, "name": p.name}) for p in self.spec.points()]
        else:
            for key, ts in groups.items():
                first = ts[0]
                points.append((key, dict(first.params) or first.system_attrs.get("fixed_params", {}),
                               {"key": key, "name": first.user_attrs.get("name", key)}))
        queued = 0
        for key, params, attrs in points:
            ts = groups.get(key, [])
            status = point_status(ts, max_retries)
            if status in ("new", "retry") or (status == "failed" and retry_failed):
                self.study.enqueue_trial(params, user_attrs=attrs)
                queued += 1
        return queued

    def _top_up_blocks(self, groups: Mapping[str, Sequence[Any]], max_retries: int, retry_failed: bool) -> int:
        """Vectorised grid: per axis combination, queue again the blocks to retry (same key, so retries are
        counted), then one new block per run of consecutive seeds that no block covers."""
        known = blocks(groups, max_retries)
        wanted = set(self.spec.seeds)
        queued = 0
        for labels in self.spec.combos():
            mine = sorted((b for b in known if b.labels == labels), key=lambda b: b.number)
            covered: set[int] = set()
            for b in mine:
                if b.status in ("done", "running", "waiting") or (b.status == "failed" and not retry_failed):
                    covered |= set(b.seeds)
            again = [b for b in mine if b.status == "retry" or (b.status == "failed" and retry_failed)]
            for b in again:
                if set(b.seeds) <= wanted and not covered & set(b.seeds):
                    self._enqueue(self.spec.block(labels, b.seeds))
                    covered |= set(b.seeds)
                    queued += 1
            for run in consecutive_runs([s for s in self.spec.seeds if s not in covered]):
                self._enqueue(self.spec.block(labels, run))
                queued += 1
        return queued

    def _enqueue(self, p: Point) -> None:
        self.study.enqueue_trial({**p.labels, "seed": p.seed, "num_seeds": p.num_seeds},
                                 user_attrs={"key": p.key, "name": p.name, "labels": p.labels, "seeds": list(p.seeds)})

    @staticmethod
    def _grid_params(p: Point) -> dict[str, Any]:
        return {**p.labels, "seed": p.seed}

    # ---- claiming
    def claim(self) -> Claim | None:
        """Pop a queued trial (atomically) that is not a duplicate; in a search, ask the sampler for a new one.

        Retries go first (in queue order), then new points: an interrupted or lost trial resumes from its
        checkpoints, so finishing it before starting new work loses the least when the sweep is stopped again."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        trials = self.trials()
        tried = {t.user_attrs.get("key") for t in trials if t.state == TrialState.FAIL}
        waiting = sorted((t for t in trials if t.state == TrialState.WAITING),
                         key=lambda t: (t.user_attrs.get("key") not in tried, t.number))
        for t in waiting:
            try:
                if not self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            claim = self._start(t._trial_id)
            if claim is not None:
                return claim
        if self.spec.search is None or _asked(self.trials()) >= self.spec.search.n_trials:
            return None
        return self._ask()

    def _start(self, trial_id: int) -> Claim | None:
        """Set up a trial this worker has just moved to RUNNING, or prune it as a duplicate."""
        import optuna

        frozen = self.storage.get_trial(trial_id)
        key = frozen.user_attrs["key"]
        same = [t for t in self.by_key().get(key, []) if t.number < frozen.number]
        vector = self.spec.search is None and self.spec.vectorize_seeds
        if vector:
            labels, seeds = frozen.user_attrs.get("labels"), frozen.user_attrs.get("seeds") or []
            in_spec = (labels in self.spec.combos() and set(seeds) <= set(self.spec.seeds)
                       and consecutive_runs(seeds) == [list(seeds)])
            overlapping = [t for t in self.trials() if t.number < frozen.number and t.user_attrs.get("labels") == labels
                           and set(t.user_attrs.get("seeds") or []) & set(seeds)]
        else:
            in_spec = self.spec.search is not None or key in {p.key for p in self.spec.points()}
            overlapping = same
        if not in_spec:
            self._finish(frozen.number, trial_id, optuna.trial.TrialState.PRUNED, None, {"not_in_spec": True})
            return None
        blocking = [t for t in overlapping if t.state in (optuna.trial.TrialState.WAITING,
                                                          optuna.trial.TrialState.RUNNING,
                                                          optuna.trial.TrialState.COMPLETE)]
        if blocking:
            self._finish(frozen.number, trial_id, optuna.trial.TrialState.PRUNED, None,
                         {"duplicate_of": blocking[0].number})
            return None
        trial = optuna.Trial(self.study, trial_id)
        if self.spec.search is None:
            for axis in self.spec.axes:
                trial.suggest_categorical(axis.name, axis.labels())
            trial.suggest_int("seed", 0, 2**31 - 1)
            if vector:
                trial.suggest_int("num_seeds", 1, 2**31 - 1)
        else:
            for p in self.spec.search.params:
                _suggest(trial, p)
        tried = [t for t in same if t.state != optuna.trial.TrialState.PRUNED]
        block = self.spec.block(labels, seeds) if vector else None
        return self._own(trial, key, frozen.user_attrs.get("name", key), attempt=len(tried) + 1, block=block)

    def _ask(self) -> Claim | None:
        import optuna

        dists = {p.name: p.distribution() for p in self.spec.search.params}
        trial = self.study.ask(fixed_distributions=dists)
        frozen = self.storage.get_trial(trial._trial_id)
        if "key" in frozen.user_attrs:  # the queue had a retry after all
            return self._start(trial._trial_id)
        if _asked(t for t in self.trials() if t.number < trial.number) >= self.spec.search.n_trials:
            self._finish(trial.number, trial._trial_id, optuna.trial.TrialState.PRUNED, None, {"surplus": True})
            return None
        key = f"t{trial.number:04d}"
        self.storage.set_trial_user_attr(trial._trial_id, "key", key)
        self.storage.set_trial_user_attr(trial._trial_id, "name", key)
        return self._own(trial, key, key, attempt=1)

    def _own(self, trial, key: str, name: str, attempt: int, block: Point | None = None) -> Claim:
        for k, v in (("host", self.host), ("hostname", socket.gethostname()), ("pid", os.getpid()),
                     ("heartbeat", time.time()), ("attempt", attempt)):
            self.storage.set_trial_user_attr(trial._trial_id, k, v)
        params = dict(trial.params)
        num_seeds = None
        if self.spec.search is None:
            point = block or next(p for p in self.spec.points() if p.key == key)
            flags, files = dict(point.flags), list(point.flagfiles)
            runs = [(point.seed, os.path.join("trials", point.name))]
            num_seeds = point.num_seeds
        else:
            flags = {p.name: p.text(params[p.name]) for p in self.spec.search.params}
            files = []
            if self.spec.vectorize_seeds:
                first, last = self.spec.seeds[0], self.spec.seeds[-1]
                runs = [(first, os.path.join("trials", f"{name}_seeds-{first}-{last}"))]
                num_seeds = len(self.spec.seeds)
            else:
                runs = [(s, os.path.join("trials", f"{name}_seed-{s}")) for s in self.spec.seeds]
        self.storage.set_trial_user_attr(trial._trial_id, "flags", flags)
        self.storage.set_trial_user_attr(trial._trial_id, "workdirs", [w for _, w in runs])
        return Claim(trial._trial_id, trial.number, key, name, flags, files, runs, params, attempt, num_seeds)

    # ---- liveness
    def heartbeat(self, trial_id: int) -> bool:
        """Record that the trial's worker is alive; False if the trial was meanwhile declared lost."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
        except UpdateFinishedTrialError:
            return False
        return True

    def fail_stale(self, grace: float) -> list[int]:
        """Mark RUNNING trials whose worker is gone (pid on this host, or heartbeat older than `grace` s) FAIL."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        now, lost = time.time(), []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.user_attrs.get("heartbeat")
            if beat is None:
                beat = t.datetime_start.timestamp() if t.datetime_start else now
            pid = t.user_attrs.get("pid")
            gone = t.user_attrs.get("host") == self.host and isinstance(pid, int) and pid != os.getpid() \
                and not pid_alive(pid)
            if not gone and now - beat <= grace:
                continue
            reason = (f"worker pid {pid} on {t.user_attrs.get('hostname')} is gone" if gone else
                      f"no heartbeat for {now - beat:.0f} s from the worker on {t.user_attrs.get('hostname')}")
            try:
                self.storage.set_trial_user_attr(t._trial_id, "lost", reason)
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue
            lost.append(t.number)
        return lost

    def unfinished(self) -> bool:
        from optuna.trial import TrialState

        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))

    # ---- results
    def succeed(self, claim: Claim, results: list[dict[str, Any]], wall: float) -> bool:
        """Record a finished trial: COMPLETE with the objective (mean over its seeds) as the study's value."""
        import optuna

        from research.sweep.spec import metric

        values = [metric(r["final"], self.spec.objective) for r in results]
        if any(v is None or not math.isfinite(v) for v in values):
            return self.fail(claim, None, f"final.json has no finite {self.spec.objective!r} (the objective)",
                             "", retriable=False, results=results, wall=wall)
        return self._finish(claim.number, claim.trial_id, optuna.trial.TrialState.COMPLETE,
                            sum(values) / len(values), {"results": results, "wall_seconds": wall, "exit_code": 0})

    def fail(self, claim: Claim, exit_code: int | None, reason: str, log_tail: str, retriable: bool,
             results: list[dict[str, Any]] | None = None, wall: float | None = None, interrupted: bool = False) -> bool:
        import optuna

        attrs = {"exit_code": exit_code, "error": reason, "log_tail": log_tail, "retriable": retriable,
                 "results": results or [], "wall_seconds": wall}
        if interrupted:
            attrs["interrupted"] = True
        return self._finish(claim.number, claim.trial_id, optuna.trial.TrialState.FAIL, None, attrs)

    def _finish(self, number: int, trial_id: int, state, value: float | None, attrs: Mapping[str, Any]) -> bool:
        """Set attributes, then the final state; False if someone else finished the trial first."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            for k, v in attrs.items():
                self.storage.set_trial_user_attr(trial_id, k, v)
            self.study.tell(number, value, state=state)
        except (UpdateFinishedTrialError, RuntimeError):
            return False
        return True


def _asked(trials: Iterable[Any]) -> int:
    """Search trials asked of the sampler (queued retries carry fixed params and do not count)."""
    return sum(1 for t in trials if "fixed_params" not in t.system_attrs)


def _suggest(trial, p) -> Any:
    if p.kind == "categorical":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    return trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            if old.get(k) != new.get(k):
                return _first_difference(old.get(k), new.get(k), f"{path}.{k}" if path else k)
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{i}]")
    return f"{path or 'spec'} (ledger: {json.dumps(old)[:120]}; spec: {json.dumps(new)[:120]})"
