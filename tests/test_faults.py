"""Bad input and faults, tried as a new user would, across the four families and the sweep.

Every case must end with the strict contract of `conftest.refusal`: exit 2 (bad input) or 3 (a loss that turned
NaN/Inf), one `error: ` line on stderr and no traceback. Cases that point at a finished run get a fresh copy of
it and must leave every byte of it as it was; cases with a fresh --workdir must not have written anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, launch, refusal, shared, tree_digest

MLP = ["--flagfile=experiments/mlp/quickstart.flags", "--steps=20", "--checkpoint_every=10", "--log_every=10",
       "--progress=log"]
RING = ["--dataset=gaussians_ring8", "--architecture=mlp", "--g_hidden=16", "--d_hidden=16", "--z_dim=8",
        "--batch_size=64", "--steps=6", "--log_every=3", "--checkpoint_every=3", "--num_eval_samples=256",
        "--eval_batch_size=64", "--progress=log"]
ADDING = ["--task=adding", "--length=10", "--hidden=8", "--batch_size=16", "--steps=10", "--log_every=5",
          "--checkpoint_every=5", "--progress=log"]
AE = ["--dataset=digits", "--latent=4", "--batch_size=64", "--steps=10", "--progress=log"]
FINISHED = {"mlp": MLP, "gan": RING, "rnn": ADDING}


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """One finished run per family that a case can point at (trained once per session, shared by the workers)."""
    with shared(tmp_path_factory, "finished") as root:
        for module, args in FINISHED.items():
            if not (root / module / "final.json").exists():
                proc = launch(module, *args, f"--workdir={root / module}")
                assert proc.returncode == 0, proc.stderr[-3000:]
    return root


SPEC = """launch = "launch.mlp"
flagfile = "{repo}/experiments/mlp/quickstart.flags"
seeds = [0]
metrics = ["accuracy"]
[axes]
{axes}
"""

# (id, module, args, the error message must contain this, exit code, the finished run the case points at)
# {wd}: a fresh copy of that finished run; {new}: a workdir that must stay unwritten; {tmp}: the test's tmp_path.
# Run "two-processes": no finished run; the launch is two processes of 4 devices each (jax.distributed on
# 127.0.0.1), and each must refuse.
CASES = [
    # ---- flags and flagfiles (answered before JAX loads)
    ("unknown flag", "mlp", ["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'", 2, None),
    ("missing flagfile", "mlp", ["--flagfile=experiments/mlp/missing.flags"], "Unable to open flagfile", 2, None),
    ("binary flagfile", "mlp", ["--flagfile={tmp}/binary.flags"], "not UTF-8", 2, None),
    ("flagfile is a directory", "mlp", ["--flagfile={tmp}"], "Is a directory", 2, None),
    ("bad enum value", "mlp", ["--optimizer=lion"], "--optimizer", 2, None),
    ("not a number", "mlp", ["--learning_rate=abc"], "could not convert", 2, None),
    ("stray argument", "mlp", ["extra_positional"], "unexpected arguments", 2, None),
    ("replica in training", "mlp", ["--replica=0"], "--replica applies to --mode=sample", 2, None),
    ("no workdir", "mlp", ["--workdir="], "--workdir is required", 2, None),
    # ---- values
    ("zero batch", "mlp", ["--batch_size=0"], "--batch_size must be positive", 2, None),
    ("batch not divisible", "mlp", ["--batch_size=12"], "does not divide by the 8 devices", 2, None),
    ("eval batch not divisible", "mlp", ["--eval_batch_size=100"], "--eval_batch_size=100 does not divide", 2, None),
    ("negative seed", "mlp", ["--seed=-1"], "--seed must be >= 0", 2, None),
    ("infinite learning rate", "mlp", ["--learning_rate=inf"], "learning_rate must be finite", 2, None),
    ("hidden not integers", "mlp", ["--hidden=abc"], "--hidden must be integers", 2, None),
    ("unknown activation", "mlp", ["--activation=swish2"], "swish2", 2, None),
    ("unknown dataset", "mlp", ["--dataset=imagenet_offline"], "unknown dataset 'imagenet_offline'", 2, None),
    ("classify without labels", "mlp", ["--dataset=diabetes"], "has no class labels; use --task=regress", 2, None),
    ("missing IDX dataset", "mlp", ["--dataset=mnist", "--data_dir={tmp}"], "dataset 'mnist' not found", 2, None),
    ("workdir under a file", "mlp", ["--workdir={tmp}/file/run"], "not writable", 2, None),
    # ---- the device mesh (model parallelism, research/sharding.py)
    ("mesh is not the devices", "mlp", ["--mesh=data:2,model:2"], "asks for 4 devices, but this run has 8", 2, None),
    ("model axis does not divide", "mlp", ["--model_parallel=3"], "a model axis of 3 does not divide", 2, None),
    ("model axis splits nothing", "mlp", ["--dataset=diabetes", "--task=regress", "--hidden=99,99",
                                          "--model_parallel=4"], "splits nothing", 2, None),
    ("model axis spans hosts", "mlp", ["--model_parallel=8"], "the model axis would span hosts", 2, "two-processes"),
    # ---- a finished run
    ("other flags", "mlp", ["--hidden=32"], "holds a run with other flags", 2, "mlp"),
    ("workdir in use", "mlp", [], "is in use by pid", 2, "mlp"),
    ("other architecture", "mlp", [], "different architecture", 2, "mlp-other-architecture"),
    ("loss turns NaN", "mlp", ["--optimizer=sgd", "--learning_rate=1e30"],
     "training stopped at step", 3, None),
    # ---- image models, augmentation, parameter EMA (docs/images.md)
    ("augment crop as large as the images", "mlp", ["--augment=crop:8"], "not smaller than the 8x8 images of digits",
     2, None),
    ("augment on non-image data", "mlp", ["--dataset=diabetes", "--task=regress", "--augment=flip"],
     "--augment applies to image datasets", 2, None),
    ("cnn on non-image data", "mlp", ["--dataset=diabetes", "--task=regress", "--architecture=cnn"],
     "--architecture=cnn needs image data", 2, None),
    ("cnn on images too small", "mlp", ["--architecture=cnn"], "needs images of at least 10x10; digits has 8x8", 2,
     None),
    ("lenet with mlp flags", "mlp", ["--architecture=lenet"], "--hidden does not apply to --architecture=lenet", 2,
     None),
    ("ae: negative ema decay", "autoencoder", ["--ema_decay=-0.5"], "--ema_decay must be in [0, 1)", 2, None),
    ("gan: augment on 2-D data", "gan", ["--dataset=gaussians_ring8", "--architecture=mlp", "--augment=flip"],
     "--augment applies to image datasets", 2, None),
    ("rnn: augment on sequences", "rnn", ["--task=adding", "--augment=noise:0.1"],
     "--augment applies to image datasets", 2, None),
    # ---- compression (docs/compression.md)
    ("distill: no teacher workdir", "mlp", ["--distill_from={tmp}/no_teacher"], "no such directory", 2, None),
    ("prune: schedule without sparsity", "mlp", ["--prune_end=10"], "applies only with --prune_sparsity > 0", 2,
     None),
    ("quantize: into the run itself", "quantize", ["--workdir={wd}", "--method=int8_weights", "--out={wd}"],
     "is the run itself", 2, "mlp"),
    # ---- autoencoder
    ("ae: flag of the other arch", "autoencoder", ["--arch=conv", "--encoder=64"], "--encoder does not apply", 2,
     None),
    ("ae: too many conv levels", "autoencoder", ["--arch=conv", "--conv_channels=4,4,4,4"], "divisible by 16", 2,
     None),
    ("ae: pixels outside [0, 1]", "autoencoder", ["--dataset=diabetes"], "values in", 2, None),
    # ---- GAN
    ("gan: dcgan on 2-D data", "gan", ["--dataset=gaussians_ring8", "--architecture=dcgan"],
     "--architecture=dcgan needs image data", 2, None),
    ("gan: gp weight without gp", "gan", ["--dataset=gaussians_ring8", "--architecture=mlp", "--gp_weight=5"],
     "--gp_weight applies to --gan_penalty=gradient_penalty", 2, None),
    ("gan: gp with batch norm", "gan", ["--dataset=digits", "--gan_penalty=gradient_penalty"],
     "turn off the critic's batch norm", 2, None),
    ("gan: conditional mlp", "gan", ["--dataset=gaussians_ring8", "--architecture=mlp", "--conditional"],
     "--conditional is implemented for --architecture=dcgan only", 2, None),
    ("gan: unsupported image size", "gan", ["--dataset=digits", "--image_size=30"], "image size 30", 2, None),
    ("gan: sample without a run", "gan", ["--mode=sample"], "does not exist", 2, None),
    ("gan: evaluator of data without one", "gan", ["--mode=evaluator", "--dataset=digits"],
     "no LeNet evaluator is trained on 'digits'", 2, None),
    ("gan: sample zero", "gan", ["--mode=sample", "--num_samples=0"], "--num_samples must be positive", 2, "gan"),
    ("gan: sample disagreeing flag", "gan", ["--mode=sample", "--z_dim=9"], "disagrees with the run", 2, "gan"),
    ("gan: tensor rules on a dcgan", "gan", ["--dataset=digits", "--sharding_rules=tensor", "--model_parallel=2"],
     "splits nothing", 2, None),
    # ---- RNN
    ("rnn: char-LM flag on adding", "rnn", ["--task=adding", "--unroll=5"], "applies to --task=char_lm only", 2,
     None),
    ("rnn: char LM without corpus", "rnn", ["--task=char_lm"], "--task=char_lm needs --dataset", 2, None),
    ("rnn: missing text file", "rnn", ["--task=char_lm", "--dataset=text:{tmp}/none.txt"], "does not exist", 2,
     None),
    ("rnn: head on a per-step task", "rnn", ["--task=copy", "--head=flatten"], "--head applies to", 2, None),
    ("rnn: length on mnist1d", "rnn", ["--task=mnist1d", "--length=10"], "--length applies to", 2, None),
    ("rnn: sample an adding run", "rnn", ["--mode=sample"], "--mode=sample applies to char_lm runs", 2, "rnn"),
    # ---- sweep
    ("sweep: no sweep dir", "sweep", ["--spec=experiments/sweeps/mlp_optimizers.toml"], "--sweep_dir is required",
     2, None),
    ("sweep: missing spec", "sweep", ["--spec={tmp}/none.toml", "--sweep_dir={new}"], "none.toml", 2, None),
    ("sweep: zero workers", "sweep", ["--spec=experiments/sweeps/mlp_optimizers.toml", "--sweep_dir={new}",
                                      "--workers=0"], "--workers must be >= 1", 2, None),
    ("sweep: unknown flag in spec", "sweep", ["--spec={tmp}/bad.toml", "--sweep_dir={new}"],
     "unknown flag --learning_rat in [axes]", 2, None),
    ("sweep: another sweep's dir", "sweep", ["--spec=experiments/sweeps/mlp_optimizers.toml",
                                             "--sweep_dir={tmp}/foreign"], "belongs to the sweep 'other'", 2, None),
    ("sweep: torn sweep.json", "sweep", ["--spec=experiments/sweeps/mlp_optimizers.toml", "--sweep_dir={tmp}/torn"],
     "cannot read", 2, None),
    ("sweep: report of nothing", "sweep", ["--report", "--sweep_dir={new}"], "pass --spec", 2, None),
    ("curves: no such run", "curves", ["--workdir={new}", "--out={tmp}/c.png"], "holds no metrics.jsonl", 2, None),
]


def _prepare(tmp) -> None:
    """The files the cases point at."""
    (tmp / "binary.flags").write_bytes(bytes(range(256)))
    (tmp / "file").write_text("")
    (tmp / "bad.toml").write_text(SPEC.format(repo=REPO, axes='learning_rat = [0.1, 0.2]'))
    for name, info in (("foreign", '{"study": "other", "storage": "journal:/x"}'), ("torn", '{"study": "oth')):
        (tmp / name).mkdir()
        (tmp / name / "sweep.json").write_text(info)


@pytest.mark.parametrize("case_id, module, args, message, code, run", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(case_id, module, args, message, code, run, tmp_path, finished):
    _prepare(tmp_path)
    processes = 2 if run == "two-processes" else 1
    run = None if processes > 1 else run
    new = tmp_path / "new"
    wd = tmp_path / "run"
    holder = None
    if run == "mlp-other-architecture":  # a 256-256 run's checkpoints under flags that say 32 wide
        wd.mkdir()
        shutil.copytree(finished / "mlp" / "checkpoints", wd / "checkpoints")
        (wd / "flags.txt").write_text((finished / "mlp" / "flags.txt").read_text().replace("--hidden=256,256",
                                                                                           "--hidden=32"))
        base = [*MLP, "--hidden=32"]
    elif run:
        shutil.copytree(finished / run, wd)
        base = FINISHED[run] if module == run else []
    else:
        base = {"mlp": MLP, "autoencoder": AE}.get(module, [])
    if case_id == "workdir in use":
        code_ = ("import sys, time; from research.workdir import Workdir; w = Workdir(sys.argv[1]); w.lock(); "
                 "print('locked', flush=True); time.sleep(120)")
        holder = subprocess.Popen([sys.executable, "-c", code_, str(wd)], stdout=subprocess.PIPE, text=True,
                                  cwd=REPO)
        assert holder.stdout.readline() == "locked\n"
    before = tree_digest(wd) if run else None
    target = wd if run else new
    argv = [a.format(tmp=tmp_path, new=new, wd=wd) for a in args]
    if module not in ("sweep", "curves") and not any(a.startswith("--workdir") for a in argv):
        argv.append(f"--workdir={target}")
    if module == "gan" and not any(a.startswith("--mode") for a in argv):
        argv.append("--evaluator=none")  # never train the LeNet classifier here
    try:
        procs = [launch(module, *base, *argv)] if processes == 1 else _on_two_processes(module, *base, *argv)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    for proc in procs:
        line = refusal(proc, code)
        assert message in line, line
    if run:
        assert tree_digest(wd) == before, "a refused run changed the finished workdir"
    elif code == 2:
        assert not new.exists(), sorted(str(p) for p in new.rglob("*"))


def _on_two_processes(module: str, *args: str) -> list[subprocess.CompletedProcess]:
    """`python -m launch.<module> args` as processes 0 and 1 of a two-process run, 4 CPU devices each."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PYTHONUNBUFFERED": "1"}
    cmds = [[sys.executable, "-m", f"launch.{module}", *args, f"--coordinator_address=127.0.0.1:{port}",
             "--num_processes=2", f"--process_id={i}"] for i in range(2)]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in cmds]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [subprocess.CompletedProcess(cmd, p.returncode, out, err)
            for cmd, p, (out, err) in zip(cmds, procs, outs, strict=True)]


def test_the_table_is_as_wide_as_promised():
    assert len(CASES) >= 40 and {c[1] for c in CASES} >= {"mlp", "autoencoder", "gan", "rnn", "sweep"}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated data file", "truncated state metadata", "truncated meta"])
def test_a_damaged_latest_checkpoint_is_redone_from_the_previous_one(how, tmp_path, finished):
    """The issue's three damages to the newest checkpoint of a real run: rerunning moves it aside with one warning
    and ends bitwise where the uninterrupted run ended."""
    wd = tmp_path / "run"
    shutil.copytree(finished / "mlp", wd)
    newest = wd / "checkpoints" / "20"
    state = newest / "state"
    path = {"truncated data file": max((state / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size),
            "truncated state metadata": state / "_METADATA", "truncated meta": newest / "meta" / "metadata"}[how]
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    (wd / "final.json").unlink()  # as if killed after the checkpoint was written
    proc = launch("mlp", *MLP, f"--workdir={wd}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [row for row in proc.stderr.splitlines() if "unreadable" in row]
    assert len(warnings) == 1 and "checkpoints/20 is unreadable" in warnings[0], proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and f"{wd}/checkpoints/10 at step 10" in proc.stderr
    want = json.loads((finished / "mlp" / "final.json").read_text())["params_sha256"]
    assert json.loads((wd / "final.json").read_text())["params_sha256"] == want
    assert (wd / "unreadable" / "checkpoints-20").is_dir()


@pytest.mark.slow
def test_overwrite_of_a_char_lm_with_another_corpus_trains(tmp_path):
    args = ["--task=char_lm", "--layers=1", "--hidden=8", "--embed=4", "--unroll=8", "--steps=4", "--batch_size=8",
            "--sample_chars=0", "--log_every=2", "--checkpoint_every=2", "--progress=log"]
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("to be or not to be " * 80)
    b.write_text("ABCDEFG hijk, LMNOP! " * 80)  # another character set
    wd = tmp_path / "run"
    assert launch("rnn", *args, f"--dataset=text:{a}", f"--workdir={wd}").returncode == 0
    (wd / "notes.txt").write_text("mine")  # not the run's: --overwrite must leave it
    refused = launch("rnn", *args, f"--dataset=text:{b}", f"--workdir={wd}")
    assert "is not the data the run" in refusal(refused)
    proc = launch("rnn", *args, f"--dataset=text:{b}", f"--workdir={wd}", "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((wd / "dataset.json").read_text())["vocab"] == "".join(sorted(set(b.read_text())))
    assert (wd / "notes.txt").read_text() == "mine" and not (wd / ".lock").exists()


@pytest.mark.slow
def test_three_launches_on_one_workdir_at_once_train_it_once(tmp_path):
    wd = tmp_path / "run"
    cmd = [sys.executable, "-m", "launch.mlp", *MLP, f"--workdir={wd}"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    refused = [err for code, err in results if code == 2]
    assert codes[0] == 0, results
    # a latecomer may start after the winner finished: it then finds the run complete and exits 0 too
    assert all(code in (0, 2) for code in codes)
    assert all("is in use by pid" in err.strip().splitlines()[-1] and len(err.strip().splitlines()) == 1
               for err in refused), refused
    final = json.loads((wd / "final.json").read_text())
    assert final["step"] == 20 and sorted(p.name for p in (wd / "checkpoints").iterdir()) == ["10", "20"]
    assert not (wd / ".lock").exists()
