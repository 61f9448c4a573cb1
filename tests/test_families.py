"""Each family's frozen config: it survives config.json (to_dict / from_dict) and refuses what it does not know."""

import json
import re

import pytest

from research.compress.config import DistillConfig, PruneConfig, QuantConfig
from research.data import DataConfig
from research.errors import ConfigError
from research.families import FAMILIES, family, load_run, to_dict
from research.loop import LoopConfig
from research.optim import OptimizerConfig
from research.workdir import Workdir

OPT = OptimizerConfig("sgd", 0.1)
CONFIGS = {
    "mlp": lambda m: m.Config(DataConfig("digits", 64), LoopConfig(steps=3, seed=2), OPT,
                              m.ModelConfig(hidden=(8, 4), dropout=0.1)),
    "autoencoder": lambda m: m.Config(DataConfig("digits", 64), LoopConfig(steps=3), OPT,
                                      m.ModelConfig(encoder=(16,), latent=2)),
    "gan": lambda m: m.Config(DataConfig("gaussians_ring8", 64), LoopConfig(steps=3), OPT, OPT,
                              m.ModelConfig(architecture="mlp", g_hidden=(8,), d_hidden=(8,))),
    "rnn": lambda m: m.Config(DataConfig("tiny_shakespeare", 8), LoopConfig(steps=3), OPT, task="char_lm",
                              unroll=16, prompt="ROMEO:"),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_a_config_survives_config_json(name, tmp_path):
    module = family(name)
    cfg = CONFIGS[name](module)
    wd = Workdir(tmp_path)
    wd.create()
    wd.write_config(name, to_dict(cfg))
    loaded_module, loaded = load_run(wd)
    assert loaded_module is module and loaded == cfg and hash(loaded) == hash(cfg)  # tuples, not lists, again
    text = json.loads(wd.config_file.read_text())
    text["config"]["model"]["retired_setting"] = 1
    wd.config_file.write_text(json.dumps(text))
    with pytest.raises(ConfigError, match="has no setting retired_setting"):
        load_run(wd)


def test_a_workdir_without_config_json_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="config.json is missing"):
        load_run(Workdir(tmp_path))
    with pytest.raises(ConfigError, match="unknown family 'vit'"):
        family("vit")


def _mlp(**kw):
    m = family("mlp")
    parts = {"data": DataConfig("digits", 64), "loop": LoopConfig(steps=3), "optimizer": OPT, "model": m.ModelConfig()}
    return m.Config(**{**parts, **kw})


REFUSED = [  # (what builds the config, the one-line message it must refuse with)
    (lambda: LoopConfig(steps=0), "--steps must be positive"),
    (lambda: LoopConfig(steps=3, red_blue=True, fuse_every=2, num_seeds=2), "cannot be combined"),
    (lambda: LoopConfig(steps=3, ema_decay=1.0), "--ema_decay must be in [0, 1)"),
    (lambda: LoopConfig(steps=3, ema_decay=-0.1), "--ema_decay must be in [0, 1)"),
    (lambda: OptimizerConfig("adamw", 1e-3), "adamw needs weight_decay"),
    (lambda: OptimizerConfig("adam", float("nan")), "learning_rate must be finite"),
    (lambda: OptimizerConfig("adam", -1.0), "learning rate must be positive"),
    (lambda: family("mlp").ModelConfig(hidden=(0,)), "--hidden widths must be positive"),
    (lambda: family("mlp").ModelConfig(dropout=1.5), "--dropout must be in [0, 1)"),
    (lambda: family("mlp").ModelConfig(activation="swish2"), "swish2"),
    (lambda: family("autoencoder").ModelConfig(latent=0), "--latent must be positive"),
    (lambda: family("rnn").ModelConfig(dropout=0.5), "needs --layers >= 2"),
    (lambda: family("gan").ModelConfig(architecture="vit"), "unknown --architecture 'vit'"),
    (lambda: PruneConfig(sparsity=1.0), "--prune_sparsity must be in [0, 1)"),
    (lambda: PruneConfig(sparsity=-0.1), "--prune_sparsity must be in [0, 1)"),
    (lambda: PruneConfig(0.5, start=100, end=50), "--prune_end=50 is before --prune_start=100"),
    (lambda: PruneConfig(0.5, scope="row"), "unknown --prune_scope 'row'"),
    (lambda: DistillConfig(teacher="t", temperature=0.0), "--distill_temperature must be > 0"),
    (lambda: DistillConfig(teacher="t", temperature=-2.0), "--distill_temperature must be > 0"),
    (lambda: DistillConfig(teacher="t", weight=1.5), "--distill_weight must be in [0, 1]"),
    (lambda: QuantConfig(evaluate=("int4",)), "--ptq_eval=int4"),
]


@pytest.mark.parametrize("build, message", REFUSED, ids=[m for _, m in REFUSED])
def test_configs_refuse_bad_values_as_they_are_built(build, message):
    """The validations behind the launch modules' one-line errors (tests/test_faults.py runs a sample of them as
    real launches); each config checks itself once, when it is built."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


def test_the_parts_of_a_config_are_checked_with_each_other():
    gan = family("gan")
    with pytest.raises(ConfigError, match="--conditional is implemented for --architecture=dcgan only"):
        gan.Config(DataConfig("gaussians_ring8", 64), LoopConfig(steps=3), OPT, OPT, gan.ModelConfig("mlp"),
                   gan.GANConfig(conditional=True))
    ae = family("autoencoder")
    with pytest.raises(ConfigError, match="its code layer is linear"):
        ae.Config(DataConfig("digits", 64), LoopConfig(steps=3), OPT, ae.ModelConfig(code_activation="relu"),
                  ae.AutoencoderConfig(variational=True))
    with pytest.raises(ConfigError, match="--eval_batch_size must be >= 0"):
        _mlp(eval_batch_size=-1)
