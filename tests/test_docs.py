"""The README and docs/ say what the results files say, and their links lead somewhere.

The README's results table names the JSON it quotes on a line ``Source: <path>.json`` right above
it. Its first column is the label setting; every other column names a benchmark variant in
backticks (``(`full`)``). A plain figure is that run's last-epoch validation accuracy,
``runs["<setting>-<variant>"]["val_accuracy"]``; in a column whose header says "mean", a figure
(or ``mean ± sd``) is ``per_setting[<setting>]["models"][<variant>]["val_accuracy_mean"]`` (and
``"val_accuracy_std"``) over the seeds, and a trailing ``(n)`` is the number of seeds, ``"n_seeds"``.
Each is compared as shown: in %, to the decimals shown.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

_SOURCE = re.compile(r"^Source:\s*\[?`?(?P<path>[\w./-]+\.json)`?\]?")
_VARIANT = re.compile(r"`([a-z0-9_]+)`")
_NUMBER = re.compile(r"^-?\d+(?:\.(\d+))?$")
_MEAN_SD = re.compile(r"^(-?\d+(?:\.\d+)?)\s*±\s*(\d+(?:\.\d+)?)$")
_N_SEEDS = re.compile(r"^(.*?)\s*\((\d+)\)$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
# Result paths quoted in backticks (outside links too): `benchmarks/results/...{md,json}`.
_RESULT_PATH = re.compile(r"`(benchmarks/results/[^`\s]+)`")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _plain(cell: str) -> str:
    return cell.replace("*", "").replace("`", "").strip()


def _results_table(text: str) -> tuple[str, list[str], list[list[str]]]:
    """``(json_path, header, rows)`` of the table that follows the README's ``Source:`` line."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _SOURCE.match(line)
        if m:
            break
    else:
        raise AssertionError("README.md has no 'Source: <results>.json' line above its results table")
    table = []
    for line in lines[i + 1:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
        elif line.strip():
            raise AssertionError(f"text between the Source line and its table: {line!r}")
    assert len(table) >= 3, "the Source line is not followed by a table with rows"
    return m["path"], _cells(table[0]), [_cells(r) for r in table[2:]]


def _shown(value: float, cell: str) -> str:
    """``value`` (a fraction) in % with as many decimals as ``cell`` shows."""
    decimals = len(cell.split(".")[1]) if "." in cell else 0
    return f"{100 * value:.{decimals}f}"


def test_every_figure_of_the_readme_results_table_is_the_one_in_the_json_it_names():
    _check_results_table(README.read_text(encoding="utf-8"))


def _check_results_table(text: str) -> None:
    path, header, rows = _results_table(text)
    results = json.loads((ROOT / path).read_text(encoding="utf-8"))
    checked = 0
    for row in rows:
        setting = _plain(row[0])
        assert setting in results["per_setting"], f"{path} has no setting {setting!r}"
        for column, cell in zip(header[1:], row[1:]):
            found = _VARIANT.findall(column)
            assert len(found) == 1, f"column {column!r} must name one variant in backticks"
            variant, shown = found[0], _plain(cell)
            if "mean" in column:
                model = results["per_setting"][setting].get("models", {}).get(variant)
                assert model is not None, f"{path}: no per_setting[{setting!r}]['models'][{variant!r}]"
                n_seeds = _N_SEEDS.match(shown)
                if n_seeds:
                    shown = n_seeds[1]
                    assert int(n_seeds[2]) == model["n_seeds"], (setting, column, cell, model["n_seeds"])
                mean_sd = _MEAN_SD.match(shown)
                mean = mean_sd[1] if mean_sd else shown
                assert _NUMBER.match(mean), f"{setting}/{column}: {cell!r} is not a figure"
                assert _shown(model["val_accuracy_mean"], mean) == mean, (setting, column, cell)
                if mean_sd:
                    assert _shown(model["val_accuracy_std"], mean_sd[2]) == mean_sd[2], (setting, column, cell)
            else:
                run = results["runs"].get(f"{setting}-{variant}")
                if run is None:
                    assert shown in ("–", "-", ""), f"{path} has no run {setting}-{variant}, README shows {cell!r}"
                    continue
                assert _NUMBER.match(shown), f"{setting}/{column}: {cell!r} is not a figure"
                assert _shown(run["val_accuracy"], shown) == shown, (
                    f"README shows {shown} for {setting}-{variant}; {path} says "
                    f"{100 * run['val_accuracy']:.4f}")
            checked += 1
    assert checked >= len(rows), "the results table shows no figures"


def test_the_results_table_checker_catches_a_wrong_figure():
    text = ("Source: benchmarks/results/benchmark_ferplus_full.json\n\n"
            "| setting | CE (`baseline`) |\n|---|---:|\n| `sym30` | 50.64 |\n")
    path, header, rows = _results_table(text)
    run = json.loads((ROOT / path).read_text(encoding="utf-8"))["runs"]["sym30-baseline"]
    assert _shown(run["val_accuracy"], rows[0][1]) == "50.64"
    assert _shown(run["val_accuracy"], "50.6") == "50.6"
    assert _shown(run["val_accuracy"], "50.65") != "50.65"


def test_the_results_table_checker_reads_means_over_seeds():
    text = ("Source: benchmarks/results/benchmark_ferplus_full.json\n\n"
            "| setting | full, mean (`full`) |\n|---|---:|\n| `sym30` | {} |\n")
    results = json.loads((ROOT / "benchmarks/results/benchmark_ferplus_full.json").read_text())
    model = results["per_setting"]["sym30"]["models"]["full"]
    mean, sd, n = 100 * model["val_accuracy_mean"], 100 * model["val_accuracy_std"], model["n_seeds"]
    _check_results_table(text.format(f"{mean:.2f} ± {sd:.2f} ({n})"))
    for wrong in (f"{mean:.2f} ± {sd:.2f} ({n + 1})", f"{mean + 0.01:.2f} ± {sd:.2f} ({n})"):
        with pytest.raises(AssertionError):
            _check_results_table(text.format(wrong))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    anchors, seen, fenced = set(), {}, False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            slug = _slug(m[1])
            n = seen.get(slug, 0)
            anchors.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
    return anchors


@pytest.mark.parametrize("md", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_results_path_in_the_docs_resolves(md: Path):
    text = md.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold commands, not links
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (md.parent / file_part).resolve() if file_part else md
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    for quoted in _RESULT_PATH.findall(text):
        if any(c in quoted for c in "<*"):
            continue  # a pattern, e.g. benchmark_ferplus_<size>.json
        m = re.match(r"(.*)\{([^}]*)\}(.*)$", quoted)
        for path in ([m[1] + alt + m[3] for alt in m[2].split(",")] if m else [quoted]):
            if not (ROOT / path).exists():
                broken.append(path)
    assert not broken, f"{md.relative_to(ROOT)}: links or paths that lead nowhere: {broken}"
