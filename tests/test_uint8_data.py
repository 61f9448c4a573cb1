"""Images stored as uint8 codes with a declared scale (`Dataset.scales`), decoded on the host by `split()` and inside
the jitted step by the loop: the decoded values are the float32 values the sources used to store, on the host and
on the devices, so a run trains to the same bits whichever way its dataset is stored."""

import dataclasses

import jax
import numpy as np
import pytest

from research import data, parallel
from research.data import ArrayPipeline, Dataset
from research.data.registry import code_values, decode
from research.data.transforms import resized
from research.loop import LoopConfig, train_and_evaluate
from research.models.dcgan import DCGANDiscriminator, DCGANGenerator
from research.models.mlp import MLP
from research.optim import OptimizerConfig
from research.tasks.gan import GANConfig, GANTask
from research.tasks.supervised import SupervisedConfig, SupervisedTask
from research.workdir import Workdir


@pytest.mark.parametrize("scale", [255.0, 16.0])
def test_code_values_are_the_float64_division_rounded_once(scale):
    codes = np.arange(256)
    np.testing.assert_array_equal(code_values(scale), (codes / scale).astype(np.float32))  # old sources' values


@pytest.mark.parametrize("scale", [255.0, 16.0])
def test_decoding_on_the_devices_equals_the_host(scale):
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    host = decode({"x": codes}, {"x": scale})["x"]
    device = jax.jit(lambda c: decode({"x": c}, {"x": scale})["x"])(codes)
    assert host.dtype == np.float32 and device.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(device), host)
    np.testing.assert_array_equal(host, code_values(scale)[codes])
    # what the table lookup avoids: XLA turns x / 255 into x * (1/255), off by an ulp for some codes
    divided = np.asarray(jax.jit(lambda c: c.astype(np.float32) / np.float32(scale))(codes))
    assert scale == 16.0 or (divided != host).any()


@pytest.mark.parametrize("name, scale", [("digits", 16.0), ("mnist_5k", 255.0), ("seq_mnist", 255.0)])
def test_bundled_image_datasets_store_codes_and_give_values(name, scale):
    ds = data.load(name)
    assert ds.scales == {"x": scale}
    for split in ("train", "test"):
        stored, values = ds.stored(split), ds.split(split)
        assert stored["x"].dtype == np.uint8 and values["x"].dtype == np.float32
        np.testing.assert_array_equal(values["x"], (stored["x"] / scale).astype(np.float32))
        assert values["y"] is stored["y"]
        assert values["x"].min() >= 0.0 and values["x"].max() == 1.0
    assert data.facts(ds)["splits"]["train"]["x"] == list(ds.stored("train")["x"].shape)  # dataset.json unchanged


def test_a_scale_on_an_array_that_is_not_uint8_is_refused():
    with pytest.raises(ValueError, match="not uint8"):
        Dataset("bad", {"train": {"x": np.zeros((2, 3), np.float32)}}, scales={"x": 255.0})


def test_pipeline_iterates_values_and_fetches_codes():
    ds = data.load("digits")
    p = ArrayPipeline(ds.stored("train"), 16, seed=3, scales=ds.scales)
    q = ArrayPipeline(ds.stored("train"), 16, seed=3, scales=ds.scales)
    codes, values = p.next_local(), next(q)
    assert codes["x"].dtype == np.uint8 and values["x"].dtype == np.float32
    np.testing.assert_array_equal(values["x"], codes["x"] / np.float32(16))
    red, blue = p.halves(0)
    assert red.scales == blue.scales == {"x": 16.0}
    assert data.train_pipeline(ds, 16, seed=0).scales == {"x": 16.0}


def test_resizing_decodes_first():
    ds = data.load("digits")
    big = resized(ds, 12)
    assert big.scales == {} and big.split("train")["x"].dtype == np.float32
    want = resized(dataclasses.replace(ds, splits={s: ds.split(s) for s in ds.splits}, scales={}), 12)
    np.testing.assert_array_equal(big.split("train")["x"], want.split("train")["x"])


def _as_float(ds: Dataset) -> Dataset:
    """The same dataset stored the way it used to be: float32 values, no scales."""
    return dataclasses.replace(ds, splits={s: ds.split(s) for s in ds.splits}, scales={})


def _train(task, tmp_path, name, **loop) -> dict:
    wd = Workdir(tmp_path / name)
    wd.create()
    cfg = LoopConfig(**{"steps": 6, "log_every": 3, "checkpoint_every": 0, "async_checkpoints": False,
                        "progress_bar": False, **loop})
    return train_and_evaluate(task, [], cfg, wd, parallel.make_mesh())


@pytest.mark.parametrize("loop", [{}, {"data_on_device": False}, {"steps_per_call": 3}, {"num_seeds": 2}],
                         ids=["on_device", "host", "scan", "seeds"])
def test_training_on_codes_gives_the_bits_of_training_on_values(tmp_path, loop):
    ds = data.load("digits")
    runs = {}
    for name, dataset in (("codes", ds), ("values", _as_float(ds))):
        task = SupervisedTask(MLP(hidden=(16,), out_dim=10), dataset, OptimizerConfig("adam", 1e-2),
                              SupervisedConfig(), batch_size=32, steps=6)
        runs[name] = _train(task, tmp_path, name, **loop)
    assert runs["codes"]["params_sha256"] == runs["values"]["params_sha256"]
    assert runs["codes"]["train_metrics"] == runs["values"]["train_metrics"]


def test_gan_trains_on_codes_to_the_bits_of_values(tmp_path):
    ds = data.load("mnist_5k")
    runs = {}
    for name, dataset in (("codes", ds), ("values", _as_float(ds))):
        task = GANTask(DCGANGenerator(size=28, channels=1, width=4), DCGANDiscriminator(size=28, width=4), dataset,
                       OptimizerConfig("adam", 1e-3), OptimizerConfig("adam", 1e-3), GANConfig(z_dim=8),
                       batch_size=16, steps=6)
        assert task.train_arrays["x"].dtype == (np.uint8 if name == "codes" else np.float32)
        runs[name] = _train(task, tmp_path, name, steps=3, log_every=3)
    assert runs["codes"]["params_sha256"] == runs["values"]["params_sha256"]
