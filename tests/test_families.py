"""Each family's frozen config: it survives config.json (to_dict / from_dict) and refuses what it does not know."""

import json

import pytest

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
