"""Every failure is one clear line, and resume is exact or refuses (see README, Failure modes)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")


def run_tool(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
                               "OMP_NUM_THREADS": "1"})


# --------------------------------------------------------------------------------------------------
# Every tool: exit status 2 and one line on bad input
# --------------------------------------------------------------------------------------------------
BAD_INPUT = {
    "train": (["--config", DEMO, "optim.lr=-0.1", "output_dir={tmp}/run"], "'optim.lr' must be > 0"),
    "test": (["--checkpoint", "{tmp}/missing"], "checkpoint not found"),
    "relabel": (["--checkpoint", "{tmp}/missing", "--out", "{tmp}/rel"], "checkpoint not found"),
    "predict": (["--checkpoint", "{tmp}/missing", "{tmp}/face.png"], "checkpoint not found"),
    "data_summary": (["--dataset", "rafdb", "--root", "{tmp}/missing"],
                     "RAF-DB root: expected folder not found"),
    "benchmark": (["--data-root", "{tmp}/missing", "--out", "{tmp}/bench", "--quick"],
                  "FERPlus root: expected folder not found"),
}


def test_every_tool_has_a_bad_input_case():
    assert sorted(BAD_INPUT) == sorted(p.stem for p in (ROOT / "tools").glob("*.py"))


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Every tool run as a subprocess on its bad input, all at once (start-up is mostly imports)."""
    tmp = tmp_path_factory.mktemp("bad_input")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = {tool: subprocess.Popen([sys.executable, str(ROOT / "tools" / f"{tool}.py"),
                                     *[a.format(tmp=tmp) for a in args]], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tool, (args, _) in BAD_INPUT.items()}
    outputs = {tool: p.communicate(timeout=600) for tool, p in procs.items()}
    return {tool: (procs[tool].returncode, *outputs[tool]) for tool in procs}


@pytest.mark.parametrize("tool", sorted(BAD_INPUT))
def test_tool_exits_2_with_one_line_on_bad_input(tool, bad_input_runs):
    _, message = BAD_INPUT[tool]
    returncode, _, stderr = bad_input_runs[tool]
    lines = stderr.strip().splitlines()
    assert returncode == 2, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: ") and message in lines[0], lines
