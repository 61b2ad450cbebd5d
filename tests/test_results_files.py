"""Results say where they came from, not where they ran.

The current results files (``benchmarks/results/``, not ``history/``) hold no absolute path: no
string of the JSON (key or value) and no Markdown text names ``/work/...``, ``/home/...`` or
``~/...``. Every ``benchmarks/*.py`` that saves figures records
:func:`fer_robust.provenance.provenance` beside them (read from its source: nothing runs). Then
the provenance helpers themselves.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from fer_robust.provenance import command_line, provenance, repo_relative, repo_root

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))

# A path that starts at the root or at a home folder: ``/`` (or ``~/``) and a name, at the start of
# the text or after a space, quote, bracket, ``=``, ``,`` or ``:``. ``P / R``, ``s/epoch``,
# ``../shared`` and ``https://`` are not.
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s`'\"(\[<=,:]))~?/[\w.-]")


def absolute_paths(value, where: str = "") -> list[str]:
    """``"where: text"`` for every string in ``value`` (a JSON value: keys, items and leaves
    walked) that holds an absolute path."""
    if isinstance(value, dict):
        return [hit for key, item in value.items()
                for hit in (absolute_paths(key, f"{where}/{key} (key)")
                            + absolute_paths(item, f"{where}/{key}"))]
    if isinstance(value, list):
        return [hit for i, item in enumerate(value)
                for hit in absolute_paths(item, f"{where}[{i}]")]
    if isinstance(value, str) and _ABSOLUTE.search(value):
        return [f"{where}: {value}"]
    return []


def current_results_files() -> list[Path]:
    return sorted(p for p in RESULTS.iterdir() if p.is_file() and p.suffix in (".json", ".md"))


def test_no_current_results_file_holds_an_absolute_path():
    files = current_results_files()
    assert any(p.suffix == ".json" for p in files) and any(p.suffix == ".md" for p in files)
    found = []
    for path in files:
        text = path.read_text()
        if path.suffix == ".json":
            found += [f"{path.name}{hit}" for hit in absolute_paths(json.loads(text))]
        else:
            found += [f"{path.name}:{n}: {line.strip()}"
                      for n, line in enumerate(text.splitlines(), 1) if _ABSOLUTE.search(line)]
    assert not found, "absolute paths in benchmarks/results (record them with repo_relative):\n" + \
        "\n".join(found)


def test_the_absolute_path_check_tells_paths_from_slashes_in_text():
    flagged = ["/work/main/runs/x", "see /home/me/data", "root=/data/ferplus", "`~/runs`",
               "(/tmp/a)", "checkpoint: /work/probe/x"]
    passed = ["runs/x", "../shared/data/ferplus", "P / R / F1", "s/epoch", "https://example.org/a",
              "TV soft→votes (given→votes)", "~1.5 h", "1/2 of the images"]
    assert [bool(absolute_paths(s)) for s in flagged] == [True] * len(flagged)
    assert [bool(absolute_paths(s)) for s in passed] == [False] * len(passed)
    assert absolute_paths({"a": [{"/abs/key": 1}]}) == ["/a[0]//abs/key (key): /abs/key"]


def _calls(source: str) -> set[str]:
    """Names of the functions a module's source calls (``f(...)`` and ``m.f(...)``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


def test_every_benchmark_script_that_saves_results_records_its_provenance():
    writers = {path.name: _calls(path.read_text()) for path in SCRIPTS}
    writers = {name: calls for name, calls in writers.items()
               if calls & {"atomic_write_json", "dump", "dumps"}}
    assert {"split_choices.py", "model_speed.py", "relabel_scale.py"} <= set(writers)
    missing = sorted(name for name, calls in writers.items() if "provenance" not in calls)
    assert not missing, f"benchmarks scripts that save results without provenance(): {missing}"


def test_paths_are_recorded_relative_to_the_repository():
    root = repo_root()
    assert (root / "fer_robust" / "provenance.py").is_file()
    assert repo_relative(root / "runs" / "x") == "runs/x"
    assert repo_relative(root.parent / "shared" / "data") == "../shared/data"  # beside it
    assert repo_relative("/nowhere/else") == "/nowhere/else"                   # elsewhere: as given
    command = command_line(root / "benchmarks" / "split_choices.py",
                           [str(root / "runs" / "a b"), f"--root={root}/data", "--batch-size", "8",
                            f"data.root={root.parent}/shared/ferplus"])
    assert command == ("python benchmarks/split_choices.py 'runs/a b' --root=data --batch-size 8 "
                       "data.root=../shared/ferplus")


def test_provenance_names_the_command_commit_machine_and_date():
    record = provenance(["--threads", "1"], ROOT / "benchmarks" / "model_speed.py", cpu=True,
                        processes=2)
    assert list(record) == ["command", "commit", "machine", "date"]
    assert record["command"] == "python benchmarks/model_speed.py --threads 1"
    assert record["commit"]  # a short hash (" + changes" when the work tree differs), or unknown
    assert "CPU cores, CPU only, 2 process(es)" in record["machine"]
    assert "threads" in record["machine"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", record["date"])
