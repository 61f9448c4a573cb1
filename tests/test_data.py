import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from research import data
from research.data.registry import stratified_split
from research.errors import ConfigError


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        data.load("nope")
    with pytest.raises(ConfigError, match="unknown dataset family"):
        data.load("zzz:thing")


def test_mnist_5k_split_is_fixed_stratified_and_disjoint():
    ds = data.load("mnist_5k")
    train, test = ds.split("train"), ds.split("test")
    assert train["x"].shape == (4000, 28, 28, 1) and test["x"].shape == (1000, 28, 28, 1)
    assert train["x"].dtype == np.float32 and train["x"].min() >= 0.0 and train["x"].max() <= 1.0
    assert np.bincount(test["y"]).tolist() == [100] * 10
    assert ds.num_classes == 10
    # no test image is also a training image
    train_rows = {r.tobytes() for r in train["x"].reshape(4000, -1)}
    assert not any(r.tobytes() in train_rows for r in test["x"].reshape(1000, -1))
    again = data.load("mnist_5k")
    np.testing.assert_array_equal(again.split("test")["x"], test["x"])


def test_stratified_split_holds_out_each_class():
    y = np.repeat(np.arange(3), [10, 20, 30])
    train, test = stratified_split(y, 0.2, seed=0)
    assert np.bincount(y[test]).tolist() == [2, 4, 6]
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 60


def test_digits_and_diabetes():
    d = data.load("digits")
    assert d.split("train")["x"].shape[1:] == (8, 8, 1) and d.num_classes == 10
    assert len(d.split("train")["x"]) + len(d.split("test")["x"]) == 1797
    r = data.load("diabetes")
    x, y = r.split("train")["x"], r.split("train")["y"]
    assert r.num_classes is None and y.dtype == np.float32
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(), 1, rtol=1e-4)
    assert r.info["target_std"] > 50  # the raw target is in the hundreds


def test_digits_are_sklearns_without_importing_it():
    """`digits` reads scikit-learn's bundled file itself (the import costs start-up): the arrays load_digits gives."""
    import subprocess
    import sys

    code = ("import sys; from research.data import offline; offline.digits(); "
            "print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    from sklearn.datasets import load_digits

    ours, theirs = data.load("digits"), load_digits()
    train, test = stratified_split(theirs.target, 0.2, seed=0)
    for name, rows in (("train", train), ("test", test)):
        np.testing.assert_array_equal(ours.split(name)["x"][..., 0], (theirs.images[rows] / 16.0).astype(np.float32))
        np.testing.assert_array_equal(ours.split(name)["y"], theirs.target[rows])


def test_mnist1d_default_sizes():
    d = data.load("mnist1d")
    assert d.split("train")["x"].shape == (4000, 40) and d.split("test")["x"].shape == (1000, 40)
    assert set(np.unique(d.split("train")["y"])) == set(range(10))
    np.testing.assert_array_equal(data.load("mnist1d").split("test")["y"], d.split("test")["y"])  # cached


def test_tfds_source_reads_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load("tfds:mnist")
    assert ds.split("train")["x"].shape == (12, 28, 28, 1) and ds.split("train")["x"].max() <= 1.0
    assert ds.split("test")["y"].dtype == np.int32 and ds.num_classes == 10


def test_tfds_unprepared_dataset_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="not prepared") as e:
        data.load("tfds:mnist", tfds_data_dir=str(tmp_path))
    assert "tfds build mnist" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown TFDS dataset"):
        data.load("tfds:no_such_dataset_xyz", tfds_data_dir=str(tmp_path))


def _rows(batch):
    return [tuple(r) for r in np.asarray(batch["i"])]


def test_array_pipeline_epochs_are_seeded_permutations():
    arrays = {"i": np.arange(10)[:, None]}
    p = data.ArrayPipeline(arrays, 3, seed=7)
    assert p.steps_per_epoch == 3
    epoch0 = sum((_rows(next(p)) for _ in range(3)), [])
    epoch1 = sum((_rows(next(p)) for _ in range(3)), [])
    assert len(set(epoch0)) == 9 and len(set(epoch1)) == 9  # incomplete last batch dropped
    assert epoch0 != epoch1
    q = data.ArrayPipeline(arrays, 3, seed=7)
    assert sum((_rows(next(q)) for _ in range(3)), []) == epoch0
    assert sum((_rows(next(data.ArrayPipeline(arrays, 3, seed=8)))
                for _ in range(1)), []) != epoch0[:3]


def test_batches_follow_the_documented_order():
    """Epoch e visits the rows in the order default_rng([seed, e]).permutation(n), batch k its k-th slice; the
    loop gathers on device from `next_rows`, the host path from `next_local`: both the same rows."""
    n, batch, seed = 23, 4, 5
    arrays = {"i": np.arange(n)[:, None]}
    rows, local = data.ArrayPipeline(arrays, batch, seed=seed), data.ArrayPipeline(arrays, batch, seed=seed)
    for epoch in range(3):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for k in range(n // batch):
            want = order[k * batch:(k + 1) * batch]
            np.testing.assert_array_equal(rows.next_rows(), want)
            np.testing.assert_array_equal(local.next_local()["i"][:, 0], want)


def test_the_step_folds_into_every_draw():
    """step_rng(state) is the run's key folded with the step (and the stream name): every step draws anew, the
    same step draws the same, on any run with that key."""
    from research.state import step_rng

    key = jax.random.PRNGKey(3)
    state = lambda step: types.SimpleNamespace(rng=key, step=jnp.asarray(step))
    draws = [np.asarray(jax.random.uniform(step_rng(state(s)), (4,))) for s in (0, 1, 2, 1)]
    assert not np.allclose(draws[0], draws[1]) and not np.allclose(draws[1], draws[2])
    np.testing.assert_array_equal(draws[1], draws[3])
    want = jax.random.fold_in(jax.random.fold_in(key, 2), 0)
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(step_rng(state(2)))),
                                  np.asarray(jax.random.key_data(want)))
    assert not np.array_equal(np.asarray(jax.random.key_data(step_rng(state(2), 1))),
                              np.asarray(jax.random.key_data(want)))


def test_pipeline_position_restores_the_same_stream():
    arrays = {"i": np.arange(20)[:, None]}
    a = data.ArrayPipeline(arrays, 4, seed=1)
    for _ in range(7):
        next(a)
    pos = a.position
    expected = [_rows(next(a)) for _ in range(6)]
    b = data.ArrayPipeline(arrays, 4, seed=1)
    b.restore(pos)
    assert [_rows(next(b)) for _ in range(6)] == expected
    with pytest.raises(ConfigError):
        b.restore({"epoch": 0, "index": 99})


def test_stream_pipeline_is_a_function_of_seed_and_index():
    sample = lambda rng, n: {"x": rng.normal(size=(n, 2))}
    a = data.StreamPipeline(sample, 5, seed=3)
    first = [next(a)["x"] for _ in range(3)]
    b = data.StreamPipeline(sample, 5, seed=3)
    b.restore({"index": 2})
    np.testing.assert_array_equal(next(b)["x"], first[2])


def test_batch_larger_than_dataset_is_rejected():
    with pytest.raises(ConfigError, match="batch_size"):
        data.ArrayPipeline({"x": np.zeros((5, 1))}, 6, seed=0)


def test_map_batches_pads_and_strips():
    arrays = {"x": np.arange(11, dtype=np.float32)[:, None]}
    out = data.map_batches(lambda b: b["x"] * 2, arrays, 4)
    np.testing.assert_array_equal(out, arrays["x"] * 2)
