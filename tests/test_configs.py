"""The recipes in configs/: one method, shared by every recipe through ``configs/_method.yaml``.

A paper config and the noise benchmark's recipe train the same method: they may differ in data,
geometry, budget and optimiser, but a robust setting (``robust.*``: how samples are split,
relabelled, weighted, mixed and gated) differs only where the file that sets it says why on its
line or the comment line above.
"""
import re
from pathlib import Path

import pytest
import yaml

from fer_robust.config import flatten_config
from fer_robust.config_io import config_sources
from fer_robust.validation import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METHOD = CONFIGS / "_method.yaml"
BENCHMARK = CONFIGS / "benchmark_ferplus.yaml"
RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("_"))
# Paper-scale recipes expect pretrained weights; these tests only read their settings.
NO_WEIGHTS = ["model.pretrained_file=none"]


def robust_settings(path: Path, overrides=()) -> dict:
    cfg = load_config(path, [*NO_WEIGHTS, *overrides])
    return {k: v for k, v in flatten_config(cfg).items() if k.startswith("robust.")}


def says_why(chain: list[Path], key: str) -> bool:
    """Whether a file of ``chain`` other than the method's sets ``key``'s last part on a line that
    carries a comment, or right under a comment line."""
    leaf = key.rsplit(".", 1)[-1]
    for path in chain:
        if path == METHOD.resolve():
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(rf"\s*{re.escape(leaf)}\s*:", line):
                if "#" in line or (i and lines[i - 1].strip().startswith("#")):
                    return True
    return False


def undocumented_departures(path: Path, reference: dict) -> list[str]:
    """The robust settings in which ``path`` differs from ``reference`` without saying why."""
    settings = robust_settings(path)
    return [k for k in sorted(settings) if settings[k] != reference.get(k)
            and not says_why(config_sources(path), k)]


def test_every_recipe_starts_from_the_method():
    assert RECIPES
    for path in RECIPES:
        assert METHOD.resolve() in config_sources(path), f"{path.name} skips _method.yaml"
    method = yaml.safe_load(METHOD.read_text())
    assert set(method) == {"robust"}  # the method's file holds the robust settings only


def test_paper_configs_and_the_benchmark_recipe_train_the_same_method():
    reference = robust_settings(BENCHMARK)
    # The settings that won on the benchmark are the method's, not the benchmark's own.
    assert reference == robust_settings(METHOD)
    assert reference["robust.split.scope"] == "global"
    assert reference["robust.teacher_ema"] > 0 and reference["robust.mixup_alpha"] > 0
    assert reference["robust.noise_gate.threshold"] > 0
    for path in RECIPES:
        assert undocumented_departures(path, reference) == [], path.name


def test_a_silent_departure_from_the_method_is_caught(tmp_path):
    reference = robust_settings(BENCHMARK)
    silent = tmp_path / "silent.yaml"
    silent.write_text(f"_base_: {METHOD}\nrobust:\n  teacher_ema: 0.0\n  mixup_alpha: 0.0\n")
    assert undocumented_departures(silent, reference) == ["robust.mixup_alpha",
                                                          "robust.teacher_ema"]
    said = tmp_path / "said.yaml"
    said.write_text(f"_base_: {METHOD}\nrobust:\n  # the paper's own: no moving-average teacher\n"
                    "  teacher_ema: 0.0\n  mixup_alpha: 0.0  # the paper does not mix\n")
    assert undocumented_departures(said, reference) == []


@pytest.mark.parametrize("name", ["rafdb.yaml", "ferplus_cpu.yaml", "demo.yaml"])
def test_a_user_of_a_paper_or_cpu_recipe_trains_the_measured_method(name):
    assert robust_settings(CONFIGS / name) == robust_settings(BENCHMARK)
