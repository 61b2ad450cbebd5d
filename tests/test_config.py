"""Config: defaults ⊕ YAML (with _base_) ⊕ overrides; unknown keys and bad types are named errors."""
import re
from pathlib import Path

import pytest
import yaml

from fer_robust.config import Config, ConfigError, config_to_dict
from fer_robust.config_io import save_config
from fer_robust.validation import load_config

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
    # a floor of 1 would erase every relabelled target's soft label
    with pytest.raises(ConfigError, match="robust.relabel.given_floor"):
        load_config(None, ["robust.relabel.given_floor=1.0"])


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


def test_reading_checks_keys_and_types_and_loading_also_checks_names():
    """``read_config`` (config_io) knows the keys and types only; ``load_config`` (validation)
    reads, then asks the registries."""
    from fer_robust.config_io import read_config

    assert read_config(None, ["data.name=imagenet"]).data.name == "imagenet"
    with pytest.raises(ConfigError, match="expected an integer"):
        read_config(None, ["optim.batch_size=many"])
    with pytest.raises(ConfigError, match=r"'data.name': 'imagenet' is not one of \['demo'"):
        load_config(None, ["data.name=imagenet"])


@pytest.mark.parametrize("override, message", [
    ("data.name=imagenet", r"'data.name': 'imagenet' is not one of \['demo', "),
    ("data.noise.type=pair", r"'data.noise.type': 'pair' is not one of \['none', 'symmetric', "),
    ("model.arch=vit", r"'model.arch': 'vit' is not one of \['arm', 'baseline', 'scn', "),
    ("stages.0.kind=probe", r"'stages.0.kind': 'probe' is not one of \['warmup', "),
    ("method.name=dividemix", r"'method.name': 'dividemix' is not one of \['staged', "),
    ("model.backbone=resnet1B", r"'model.backbone': 'resnet1B' is not a known timm model; "
                                r"close names: .*resnet18"),
])
def test_unknown_registered_name_stops_the_train_tool_in_one_line_before_training(
        override, message, tmp_path, capsys):
    from fer_robust.cli import train as train_cli

    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--config", str(CONFIGS / "demo.yaml"), override, f"output_dir={run_dir}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(r"^train: error: " + message, err), err
    assert not run_dir.exists()


def test_trainer_refuses_a_config_built_in_python_before_building_anything(tmp_path):
    """A config that never went through ``load_config`` meets the same checks in ``Trainer``."""
    from fer_robust.engine.trainer import Trainer

    cfg = Config(output_dir=str(tmp_path / "run"))
    cfg.data.name = "imagenet"
    with pytest.raises(ConfigError, match=r"'data.name': 'imagenet' is not one of \['demo'"):
        Trainer(cfg, cpu=True)
    cfg.data.name, cfg.optim.lr = "demo", -1.0
    with pytest.raises(ConfigError, match=r"'optim.lr' must be > 0, got -1.0"):
        Trainer(cfg, cpu=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-0.1", r"'optim.lr' must be > 0, got -0.1"),
    ("optim.lr=0", r"'optim.lr' must be > 0, got 0"),
    ("optim.weight_decay=-1", r"'optim.weight_decay' must be >= 0"),
    ("optim.opt=foo", r"'optim.opt': 'foo' is not a known timm optimizer"),
    ("optim.sched=foo", r"'optim.sched': 'foo' is not one of \['cosine'"),
    ("data.num_workers=-1", r"'data.num_workers' must be >= 0"),
    ("robust.split.threshold=2", r"'robust.split.threshold' must be in \(0, 1\)"),
    ("model.mim.patch_size=0", r"'model.mim.patch_size' must be >= 1"),
])
def test_values_that_would_fail_later_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "demo.yaml", [override])


def test_backbone_typo_lists_close_timm_names():
    with pytest.raises(ConfigError, match=r"'model.backbone': 'resnet1B' is not a known timm model; "
                                          r"close names: .*resnet18"):
        load_config(None, ["model.backbone=resnet1B"])
    assert load_config(None, ["model.backbone=resnet50.a1_in1k"]).model.backbone == "resnet50.a1_in1k"


def test_empty_root_and_missing_weight_file_are_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.root' is empty"):
        load_config(CONFIGS / "ferplus_cpu.yaml", ["data.root="])
    with pytest.raises(ConfigError, match=r"'model.pretrained_file': file not found: .*nope.pth"):
        load_config(None, [f"model.pretrained_file={tmp_path / 'nope.pth'}"])
    assert load_config(None, ["model.pretrained_file=None"]).model.pretrained_file == "None"


def test_yaml_1_1_pitfalls_read_as_people_mean_them(tmp_path):
    """YAML 1.1 reads ``no`` as a boolean and ``1e-4`` as a string: a file, the command line and a
    quoted number all give the typed value."""
    f = tmp_path / "pitfalls.yaml"
    f.write_text("mixed_precision: no\noptim:\n  lr: 1e-4\n  min_lr: '2e-6'\n  batch_size: '16'\n"
                 "data:\n  skip_unreadable: 'yes'\nmodel:\n  output_stride: '16'\n")
    cfg = load_config(f)
    assert cfg.mixed_precision == "no" and cfg.optim.lr == 1e-4 and cfg.optim.min_lr == 2e-6
    assert cfg.optim.batch_size == 16 and cfg.data.skip_unreadable is True
    assert cfg.model.output_stride == 16
    cli = load_config(None, ["optim.lr=1e-4", "mixed_precision=no", "optim.weight_decay=5E-2",
                             "data.skip_unreadable=on"])
    assert (cli.optim.lr, cli.mixed_precision, cli.optim.weight_decay) == (1e-4, "no", 0.05)
    assert cli.data.skip_unreadable is True
    # A YAML 1.1 reader's booleans still pick the matching choice.
    assert load_config(None, ["mixed_precision=false"]).mixed_precision == "no"
    save_config(cli, tmp_path / "saved.yaml")
    assert config_to_dict(load_config(tmp_path / "saved.yaml")) == config_to_dict(cli)
    with pytest.raises(ConfigError, match=r"'optim.lr' \(from command line\): expected a number"):
        load_config(None, ["optim.lr=fast"])
