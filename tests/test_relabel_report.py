"""``tools/relabel.py --html``: the page's content, and the page as headless Chromium shows it.

The browser tests need Debian's ``chromium`` package (``.ci/run`` installs it where it can); they
skip, saying so, where no Chromium is installed.
"""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from _run_fixture import make_run
from fer_robust.cli import relabel as relabel_cli
from fer_robust.data.base import FERDataset
from fer_robust.data.demo import draw_face
from fer_robust.robust.relabel_report import render_relabel_report
from fer_robust.robust.selection import RobustDecision

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium installed (apt-get install chromium; .ci/run does it)")
CARD = re.compile(r'<figure class="card" data-index="(\d+)" data-given="([^"]*)" '
                  r'data-new="([^"]*)" data-clean="([^"]*)"([^>]*)>')


def open_in_chromium(page: Path, fragment: str = "") -> tuple[str, str]:
    """``(DOM after the page's script ran, browser log)`` from headless Chromium."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def console_errors(log: str) -> list[str]:
    """Console messages and uncaught exceptions in Chromium's log (its own D-Bus and GPU noise
    left out)."""
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def shown(dom: str) -> int:
    return int(re.search(r'<b id="shown">(\d+)</b>', dom).group(1))


def visible_cards(dom: str) -> list[tuple]:
    return [m.groups()[:4] for m in CARD.finditer(dom) if "display: none" not in m.group(5)]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A relabel run with --html on a tiny demo run; returns (report.html, relabel.csv rows)."""
    tmp = tmp_path_factory.mktemp("relabel")
    run = make_run(tmp / "run")
    out = tmp / "out"
    relabel_cli.main(["--checkpoint", str(run), "--out", str(out), "--html", "--cpu"])
    with open(out / "relabel.csv") as fh:
        rows = list(csv.DictReader(fh))
    return out / "report.html", rows


def test_report_holds_every_flagged_image_with_its_labels_and_nothing_from_outside(report):
    page, rows = report
    text = page.read_text()
    noisy = {int(r["index"]): r for r in rows if r["status"] == "noisy"}
    cards = CARD.findall(text)
    assert noisy and len(cards) == len(noisy)
    for index, given, new, clean, _ in cards:
        row = noisy[int(index)]
        assert (given, new) == (row["given_label"], row["new_label"])
        assert float(clean) == pytest.approx(float(row["clean_prob"]), abs=1e-4)
    assert text.count('src="data:image/png;base64,') == len(cards)
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<link" not in text


def test_report_shows_annotator_votes_and_caps_each_class():
    classes = ["neutral", "happiness", "surprise"]
    targets = np.array([0, 0, 0, 1, 1, 2])
    votes = np.array([[7, 3, 0], [6, 0, 4], [10, 0, 0], [2, 8, 0], [0, 9, 1], [0, 0, 10]])
    rng = np.random.default_rng(0)
    dataset = FERDataset(classes, targets, [f"fer{i}.png" for i in range(6)],
                         loader=lambda i: draw_face(i % 7, rng, 48).convert("L"), votes=votes)
    clean = np.array([0.1, 0.3, 0.9, 0.2, 0.8, 0.95])
    soft = np.eye(3)[[1, 2, 0, 0, 1, 2]] * 0.8 + 0.2 / 3
    decision = RobustDecision.build(clean, clean > 0.5, soft, targets, clean <= 0.5,
                                    clean <= 0.5)
    text = render_relabel_report(dataset, decision, classes, max_per_class=1)
    cards = CARD.findall(text)
    # Flagged: 0 and 1 (neutral), 3 (happiness); one per class, the lowest clean probability.
    assert [(c[0], c[1], c[2]) for c in cards] == [("0", "neutral", "happiness"),
                                                   ("3", "happiness", "neutral")]
    assert "votes: neutral 7 &middot; happiness 3" in text
    assert "the 1 with the lowest clean probability of 2" in text


@needs_chromium
def test_report_renders_in_headless_chromium_without_errors(report):
    page, rows = report
    expected = sum(r["status"] == "noisy" for r in rows)
    dom, log = open_in_chromium(page)
    assert 'data-ready="1"' in dom, "the page's script did not finish"
    assert re.search(r'<ul id="errors"></ul>', dom), re.search(r'<ul id="errors">.*?</ul>', dom)
    assert console_errors(log) == []
    assert shown(dom) == len(visible_cards(dom)) == expected


@needs_chromium
def test_report_filters_by_given_to_new_label_and_sorts_by_clean_probability(report):
    page, rows = report
    noisy = [r for r in rows if r["status"] == "noisy"]
    (given, new), count = Counter((r["given_label"], r["new_label"]) for r in noisy).most_common(1)[0]
    dom, log = open_in_chromium(page, f"change={quote(given + '>' + new)}&sort=clean-desc")
    cards = visible_cards(dom)
    assert console_errors(log) == []
    assert shown(dom) == len(cards) == count
    assert all((g, n) == (given, new) for _, g, n, _ in cards)
    clean = [float(c[3]) for c in cards]
    assert clean == sorted(clean, reverse=True)

    dom, _ = open_in_chromium(page, f"class={quote(given)}")
    assert shown(dom) == len(visible_cards(dom)) == sum(r["given_label"] == given for r in noisy)
