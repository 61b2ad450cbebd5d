"""Config: defaults ⊕ YAML (with _base_) ⊕ overrides; unknown keys and bad types are named errors."""
from pathlib import Path

import pytest
import yaml

from fer_robust.config import Config, ConfigError, config_to_dict, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """Each config loads as shipped, except that a recipe expecting pretrained weights refuses to
    train from scratch unless told so."""
    opt_out = load_config(path, ["model.pretrained_file=none"])
    if opt_out.model.expects_pretrained:
        with pytest.raises(ConfigError, match="model.pretrained_file=none"):
            load_config(path)
    else:  # CPU recipes train from scratch as shipped
        assert load_config(path).model.pretrained_file == ""
    assert sum(s.epochs for s in opt_out.stages) > 0


def test_override_changes_nested_value_and_list_item():
    cfg = load_config(CONFIGS / "demo.yaml", ["optim.lr=0.5", "stages.1.epochs=0",
                                              "data.noise.type=symmetric", "data.noise.rate=0.3",
                                              "data.augment.crop_scale=[0.5, 1.0]"])
    assert cfg.optim.lr == 0.5 and cfg.stages[1].epochs == 0
    assert cfg.data.noise.type == "symmetric" and cfg.data.noise.rate == 0.3
    assert cfg.data.augment.crop_scale == (0.5, 1.0)


def test_base_chain_keeps_parent_values_and_child_overrides():
    cfg = load_config(CONFIGS / "ferplus_cpu_baseline.yaml")
    assert cfg.model.arch == "baseline"              # child
    assert cfg.data.name == "ferplus" and cfg.data.img_size == 48  # parent
    assert [s.kind for s in cfg.stages] == ["warmup"]


def test_unknown_override_key_is_named():
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config(CONFIGS / "demo.yaml", ["optim.lrr=0.1"])


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: demo\n  imgsize: 64\n")
    with pytest.raises(ConfigError, match=r"data\.imgsize.*bad\.yaml"):
        load_config(bad)


def test_wrong_type_and_bad_choice_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="optim.batch_size"):
        load_config(None, ["optim.batch_size=abc"])
    with pytest.raises(ConfigError, match="data.name"):
        load_config(None, ["data.name=imagenet"])
    with pytest.raises(ConfigError, match="loss term"):
        load_config(None, ["stages.0.loss_weights.foo=1"])
    with pytest.raises(ConfigError, match="robust.relabel.model_weight"):
        load_config(None, ["robust.relabel.model_weight=1.5"])


def test_invalid_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("data:\n  name: demo\n   img_size: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml line \d+"):
        load_config(bad)


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(CONFIGS / "demo.yaml", ["optim.lr=0.123", "data.noise.type=annotator"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["lr"] == 0.123


def test_defaults_are_a_valid_config():
    cfg = load_config()
    assert config_to_dict(cfg) == config_to_dict(Config())
    assert (cfg.data.name, cfg.data.noise.type, cfg.model.arch, [s.kind for s in cfg.stages]) == \
        ("demo", "none", "two_branch", ["warmup"])


def test_registries_own_the_names():
    """A registered stage kind is a valid ``stages.N.kind`` while it is registered, and only then;
    a name no registry holds is an error listing the valid ones."""
    from fer_robust.engine.stages import WarmupStage, registered_stage

    class ProbeStage(WarmupStage):
        pass

    with registered_stage("probe", ProbeStage):
        assert load_config(None, ["stages.0.kind=probe"]).stages[0].kind == "probe"
    with pytest.raises(ConfigError, match=r"'stages.0.kind': 'probe' is not one of \['warmup'"):
        load_config(None, ["stages.0.kind=probe"])
    with pytest.raises(ConfigError, match=r"'model.arch': 'foo' is not one of \['arm', 'baseline', "
                                          r"'scn', 'two_branch'\]"):
        load_config(None, ["model.arch=foo"])
    with pytest.raises(ConfigError, match="'data.noise.type': 'pair' is not one of"):
        load_config(None, ["data.noise.type=pair"])
