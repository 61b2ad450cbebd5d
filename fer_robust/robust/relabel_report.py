"""One self-contained HTML page of a relabelling decision (``tools/relabel.py --html``).

Per class of the given label, the images the split flags as noisy, each with its given label, its
soft label as a small bar chart, its new label, its clean probability and, where the dataset has
annotator votes (FERPlus), the votes; the true label too when it is known (injected noise). The
images are embedded as PNG data URIs and the script is plain JavaScript inside the page, so the
file opens from disk in any browser, with no server and no network.

Controls: a class filter, a given -> new label filter, and the order (clean probability up or
down, or dataset index). Their state lives in the URL's fragment too, so a filtered view is a
link: ``report.html#class=happy&change=happy>sad&sort=clean-desc``. After the script has run,
``<body data-ready="1">`` and ``#shown`` holds the number of images shown; a script error is
written into ``#errors`` (as well as the console), so a headless browser's DOM dump shows it
(``tests/test_relabel_report.py``).
"""
from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from fer_robust.data.base import FERDataset
from fer_robust.robust.selection import RobustDecision
from fer_robust.utils import atomic_path

__all__ = ["flagged_by_class", "render_relabel_report", "write_relabel_report"]

#: Thumbnails are at most this many pixels on a side (FER's 48 px faces stay as they are).
THUMBNAIL_SIDE = 112


def flagged_by_class(decision: RobustDecision, given: np.ndarray, num_classes: int,
                     max_per_class: int = 0) -> list[np.ndarray]:
    """Per given class, the dataset indices of the images the split flags as noisy, lowest clean
    probability first; with ``max_per_class`` at most that many per class (0: all)."""
    flagged = np.flatnonzero(~np.asarray(decision.clean_mask, dtype=bool))
    flagged = flagged[np.argsort(decision.clean_prob[flagged], kind="stable")]
    per_class = [flagged[given[flagged] == k] for k in range(num_classes)]
    return [f[:max_per_class] for f in per_class] if max_per_class > 0 else per_class


def _thumbnail_uri(image: Image.Image) -> str:
    """``image`` (a dataset's RGB image, :meth:`FERDataset.load_image`) as a PNG data URI."""
    if max(image.size) > THUMBNAIL_SIDE:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bars(soft: np.ndarray, class_names: list[str], given: int, new: int) -> str:
    """The soft label as a bar chart: one bar per class, the given class outlined, the new one
    filled dark."""
    bars = []
    for k, (name, value) in enumerate(zip(class_names, soft)):
        kind = " new" if k == new else ""
        kind += " given" if k == given else ""
        bars.append(f'<span class="bar{kind}" style="height:{max(1.0, 100 * float(value)):.0f}%" '
                    f'title="{html.escape(name)} {float(value):.2f}"></span>')
    ticks = "".join(f"<span>{html.escape(name[:3])}</span>" for name in class_names)
    return (f'<div class="bars" role="img" aria-label="soft label">{"".join(bars)}</div>'
            f'<div class="ticks">{ticks}</div>')


def _card(i: int, dataset: FERDataset, decision: RobustDecision, class_names: list[str],
          true_labels: np.ndarray | None) -> str:
    given, new = int(dataset.targets[i]), int(decision.new_labels[i])
    clean = float(decision.clean_prob[i])
    lines = [f'<b>{html.escape(class_names[given])}</b> &rarr; <b>{html.escape(class_names[new])}</b>',
             f'clean p <span class="clean">{clean:.3f}</span>']
    if true_labels is not None:
        lines.append(f"true: {html.escape(class_names[int(true_labels[i])])}")
    if dataset.votes is not None:
        votes = dataset.votes[i]
        shown = " &middot; ".join(f"{html.escape(class_names[k])} {int(votes[k])}"
                                  for k in np.argsort(-votes, kind="stable") if votes[k] > 0)
        lines.append(f'<span class="votes">votes: {shown or "none"}</span>')
    return (
        f'<figure class="card" data-index="{i}" data-given="{html.escape(class_names[given])}" '
        f'data-new="{html.escape(class_names[new])}" data-clean="{clean:.6f}">'
        f'<img src="{_thumbnail_uri(dataset.load_image(i))}" alt="image {i}" '
        f'title="{html.escape(str(dataset.paths[i]))}">'
        f'{_bars(decision.soft_labels[i], class_names, given, new)}'
        f'<figcaption>{"<br>".join(lines)}</figcaption></figure>')


_STYLE = """
body{font:13px/1.35 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:8px 14px;z-index:1}
h1{font-size:17px;margin:0 0 4px}h2{font-size:15px;margin:14px 14px 6px}
.meta{color:#555}.controls label{margin-right:14px}#errors{color:#b00;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:8px;padding:0 14px}
.card{margin:0;width:128px;background:#fff;border:1px solid #ddd;border-radius:4px;padding:5px}
.card img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;display:block;margin:auto}
.bars{display:flex;align-items:flex-end;height:28px;gap:1px;margin:4px 0;border-bottom:1px solid #999}
.bar{flex:1;background:#9ab;min-height:1px}.bar.given{outline:1.5px solid #d60;outline-offset:-1.5px}
.bar.new{background:#247}
.ticks{display:flex;gap:1px;font-size:7px;color:#777;margin-bottom:3px}
.ticks span{flex:1;text-align:center;overflow:hidden}figcaption{font-size:11px}.votes{color:#555}
.legend span{display:inline-block;width:10px;height:10px;vertical-align:middle;margin:0 3px 0 8px}
"""

_SCRIPT = r"""
(function () {
  var errors = document.getElementById('errors');
  function report(message) {
    var item = document.createElement('li'); item.textContent = message; errors.appendChild(item);
  }
  window.addEventListener('error', function (e) { report('error: ' + e.message); });
  var consoleError = console.error;
  console.error = function () {
    report('console.error: ' + Array.prototype.join.call(arguments, ' '));
    consoleError.apply(console, arguments);
  };
  var classSelect = document.getElementById('class'), changeSelect = document.getElementById('change');
  var sortSelect = document.getElementById('sort');
  var sections = Array.prototype.slice.call(document.querySelectorAll('section.cls'));
  function fromHash() {
    var state = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (part) {
      var kv = part.split('='); if (kv[0]) state[decodeURIComponent(kv[0])] = decodeURIComponent(kv[1] || '');
    });
    [['class', classSelect], ['change', changeSelect], ['sort', sortSelect]].forEach(function (p) {
      if (state[p[0]] !== undefined &&
          Array.prototype.some.call(p[1].options, function (o) { return o.value === state[p[0]]; }))
        p[1].value = state[p[0]];
    });
  }
  function toHash() {
    var hash = 'class=' + encodeURIComponent(classSelect.value) + '&change=' +
      encodeURIComponent(changeSelect.value) + '&sort=' + encodeURIComponent(sortSelect.value);
    if (location.hash.replace(/^#/, '') !== hash) history.replaceState(null, '', '#' + hash);
  }
  function key(card) {
    var s = sortSelect.value;
    if (s === 'index') return Number(card.dataset.index);
    var clean = Number(card.dataset.clean);
    return s === 'clean-desc' ? -clean : clean;
  }
  function apply() {
    var shown = 0, cls = classSelect.value, change = changeSelect.value;
    sections.forEach(function (section) {
      var grid = section.querySelector('.grid');
      var cards = Array.prototype.slice.call(grid.children);
      cards.sort(function (a, b) { return key(a) - key(b) || a.dataset.index - b.dataset.index; });
      var inSection = 0;
      cards.forEach(function (card) {
        grid.appendChild(card);
        var ok = (cls === '' || card.dataset.given === cls) &&
                 (change === '' || card.dataset.given + '>' + card.dataset.new === change);
        card.style.display = ok ? '' : 'none';
        if (ok) inSection += 1;
      });
      section.style.display = inSection ? '' : 'none';
      section.querySelector('.count').textContent = inSection;
      shown += inSection;
    });
    document.getElementById('shown').textContent = shown;
    toHash();
  }
  fromHash();
  [classSelect, changeSelect, sortSelect].forEach(function (s) { s.addEventListener('change', apply); });
  window.addEventListener('hashchange', function () { fromHash(); apply(); });
  apply();
  document.body.setAttribute('data-ready', '1');
})();
"""


def render_relabel_report(dataset: FERDataset, decision: RobustDecision, class_names: list[str],
                          true_labels: np.ndarray | None = None, title: str = "relabel report",
                          max_per_class: int = 0) -> str:
    """The page (see the module docstring) as a string.

    Args:
        dataset: the training split with the labels training was given (``dataset.targets``),
            its images (``load_image``) and, for FERPlus, ``votes``.
        decision: the split and relabelling (clean probability, clean mask, soft and new labels).
        class_names: names in class-id order.
        true_labels: ``(N,)`` true labels when noise was injected, else None.
        title: the page's title (e.g. the checkpoint).
        max_per_class: show at most this many flagged images per given class, the lowest clean
            probabilities first (0: all of them).
    """
    given = np.asarray(dataset.targets)
    flagged = np.flatnonzero(~np.asarray(decision.clean_mask, dtype=bool))
    shown = flagged_by_class(decision, given, len(class_names), max_per_class)
    sections = []
    for k, (name, kept) in enumerate(zip(class_names, shown)):
        in_class = int((given[flagged] == k).sum())
        note = (f" (the {len(kept)} with the lowest clean probability of {in_class})"
                if len(kept) < in_class else "")
        cards = "".join(_card(int(i), dataset, decision, class_names, true_labels) for i in kept)
        sections.append(
            f'<section class="cls" data-class="{html.escape(name)}"><h2>given {html.escape(name)}: '
            f'<span class="count">{len(kept)}</span> flagged noisy{note}</h2>'
            f'<div class="grid">{cards}</div></section>')
    on_page = np.concatenate(shown) if shown else np.zeros(0, dtype=np.int64)
    total_shown = len(on_page)
    transitions = Counter((class_names[given[i]], class_names[decision.new_labels[i]])
                          for i in on_page)
    class_options = "".join(
        f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in class_names)
    change_options = "".join(
        f'<option value="{html.escape(a)}&gt;{html.escape(b)}">{html.escape(a)} &rarr; '
        f'{html.escape(b)} ({n})</option>'
        for (a, b), n in sorted(transitions.items(), key=lambda t: (-t[1], t[0])))
    clean_ratio = float(np.mean(decision.clean_mask)) if len(given) else 0.0
    meta = (f"{len(given):,} training images; {len(flagged):,} flagged noisy "
            f"(clean ratio {clean_ratio:.3f}); {total_shown:,} on this page; "
            f"{int((decision.new_labels[flagged] != given[flagged]).sum()):,} of them get a new label")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body data-ready="0"><header>
<h1>{html.escape(title)}</h1>
<div class="meta">{meta}. Soft label: one bar per class ({html.escape(", ".join(class_names))}),
<span class="legend"><span style="background:#247"></span>new label
<span style="background:#9ab;outline:1.5px solid #d60"></span>given label</span></div>
<div class="controls"><label>class <select id="class"><option value="">all classes</option>
{class_options}</select></label>
<label>given &rarr; new <select id="change"><option value="">all</option>{change_options}</select></label>
<label>order <select id="sort"><option value="clean-asc">clean probability, lowest first</option>
<option value="clean-desc">clean probability, highest first</option>
<option value="index">dataset index</option></select></label>
showing <b id="shown">{total_shown}</b> images</div>
<ul id="errors"></ul></header>
<main>{"".join(sections)}</main>
<script>{_SCRIPT}</script></body></html>
"""


def write_relabel_report(path: str | Path, *args, **kwargs) -> Path:
    """:func:`render_relabel_report` written to ``path`` (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(render_relabel_report(*args, **kwargs), encoding="utf-8")
    return path
