"""Reading and writing a run's config: YAML files, command-line overrides, and their types.

:func:`read_config` layers the dataclass defaults of :mod:`fer_robust.config`, a YAML file (which
may name a ``_base_`` YAML it extends, relative to itself) and ``key.sub=value`` overrides. Every
key is checked against the dataclasses: an unknown key or a value of the wrong type is a
:class:`~fer_robust.config.ConfigError` that names the key and the file it came from.
YAML files and command-line values are read with YAML 1.2's booleans and floats (:class:`_Loader`),
and typed fields take what people type: ``optim.lr=1e-4`` is a float, ``mixed_precision=no`` the
string ``'no'``, ``"0.5"`` in a float field the number 0.5 (:func:`_coerce`).
The values themselves (ranges, registered names) are checked by :mod:`fer_robust.validation`, whose
:func:`~fer_robust.validation.load_config` is this module's :func:`read_config` followed by those
checks. The resolved config is saved with every run (:func:`save_config`) and can be reloaded
exactly.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from fer_robust.config import Config, ConfigError, config_to_dict
from fer_robust.utils import atomic_write_text

__all__ = ["read_config", "save_config", "apply_overrides", "config_sources"]


# --------------------------------------------------------------------------------------------------
# Reading YAML
# --------------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans and floats.

    PyYAML implements YAML 1.1, where ``yes/no/on/off`` are booleans (so ``mixed_precision: no``
    became ``False``) and a float needs a dot (so ``lr: 1e-4`` stayed the string ``'1e-4'``).
    YAML 1.2, the version most other YAML tools read, takes only ``true/false`` as booleans and
    ``1e-4`` as a float; so does this loader, in config files and in command-line values.

    A config file or a command-line value is untrusted input, so what it may expand to is
    bounded. An alias repeats a list or mapping without copying it: nine levels of nine aliases
    are a few lines that expand to 9^9 values, and whatever walks them (a check, an error message
    quoting them) runs for minutes and fills memory. The loader counts each node's values with its
    aliases expanded as it composes the document, and refuses, at the line of the node, one past
    :attr:`MAX_VALUES` (a config holds a few hundred), one nested deeper than :attr:`MAX_DEPTH`,
    and an alias of the list or mapping that holds it.
    """

    MAX_VALUES = 100_000
    MAX_DEPTH = 64

    def compose_document(self) -> Any:
        self._expanded: dict[int, int] = {}  # id(node) -> its values, aliases expanded
        self._depth = 0
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark
        alias = self.check_event(yaml.AliasEvent)
        if self._depth >= self.MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {self.MAX_DEPTH} levels deep", mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if alias:  # counted again wherever it is used, as it expands there
            if id(node) not in self._expanded:
                raise yaml.composer.ComposerError(
                    None, None, "an alias refers to the list or mapping that holds it", mark)
            return node
        children = (node.value if isinstance(node, yaml.SequenceNode) else
                    [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else [])
        size = 1 + sum(self._expanded[id(child)] for child in children)
        if size > self.MAX_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"expands to more than {self.MAX_VALUES:,} values once its aliases "
                "are expanded (a config holds a few hundred)", mark)
        self._expanded[id(node)] = size
        return node


# A config file is a few kilobytes; anything far larger is not one.
MAX_CONFIG_BYTES = 1 << 20

# Error messages quote a value shortened (a value may be a long list or string).
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxtuple, _QUOTE.maxdict = 3, 8, 8, 8
_QUOTE.maxstring = _QUOTE.maxother = 120


def _quote(value: Any) -> str:
    """``repr(value)`` for an error message, shortened (reprlib never builds the whole repr)."""
    return _QUOTE.repr(value)


_BOOL_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_YAML12 = {
    _BOOL_TAG: re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    # A dot or an exponent makes a float; plain digits stay an int (the int resolver comes after).
    _FLOAT_TAG: re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
                               |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                               |[-+]?\.(?:inf|Inf|INF)
                               |\.(?:nan|NaN|NAN))$""", re.X),
}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, _YAML12.get(tag, regexp)) for tag, regexp in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------------------------------
# Building from dicts with validation
# --------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


# What people type for a boolean, in a YAML file loaded elsewhere or quoted on the command line.
_TRUE_WORDS, _FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _literal_choice(value: Any, choices: tuple) -> Any:
    """``value`` as one of ``choices`` when it is one in another form: a YAML 1.1 boolean for a
    ``yes/no/on/off`` choice (``mixed_precision: no`` read elsewhere as ``False``) or a number
    typed as a string (``"16"`` for ``output_stride``). Otherwise ``value`` unchanged."""
    if isinstance(value, bool):
        words = _TRUE_WORDS if value else _FALSE_WORDS
        return next((c for c in choices if isinstance(c, str) and c.lower() in words), value)
    if isinstance(value, str):
        return next((c for c in choices if not isinstance(c, str) and str(c) == value.strip()),
                    value)
    return value


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp`` (converting YAML forms where lossless)."""
    origin = get_origin(tp)
    where = f"{key!r} (from {source})"
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {_type_name(tp)}, "
                              f"got {type(value).__name__}")
        return _build(tp, value, key, source)
    if origin is Literal:
        choices = get_args(tp)
        value = _literal_choice(value, choices)
        if value not in choices or isinstance(value, bool):
            raise ConfigError(f"{where}: {_quote(value)} is not one of {list(choices)}")
        return value
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}.{i}", source) for i, v in enumerate(value)]
    if origin is tuple:
        item_tps = get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_tps):
            raise ConfigError(f"{where}: expected a list of {len(item_tps)} values, got {_quote(value)}")
        return tuple(_coerce(v, t, f"{key}.{i}", source) for i, (v, t) in enumerate(zip(value, item_tps)))
    if origin is dict:
        k_tp, v_tp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {_coerce(k, k_tp, f"{key}.{k}", source): _coerce(v, v_tp, f"{key}.{k}", source)
                for k, v in value.items()}
    if tp in (float, int) and isinstance(value, str):
        try:  # a number quoted in YAML, or '1e-4' from a YAML 1.1 reader
            value = float(value.strip().replace("_", ""))
        except ValueError:
            pass
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigError(f"{where}: expected a number, got {_quote(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where}: expected an integer, got {_quote(value)}")
        return int(value)
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_quote(value)}")
        return value
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {_quote(value)}")
        return str(value)
    return value


def _build(cls: type, values: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in names]
    if unknown:
        full = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key {full!r} (from {source}); "
                          f"valid keys{' of ' + prefix if prefix else ''}: {sorted(names)}")
    kwargs = {}
    for k, v in values.items():
        full = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _coerce(v, hints[k], full, source)
    return cls(**kwargs)  # sections not given keep their defaults


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "loss_weights":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, _seen: tuple = ()) -> tuple[dict, list[str]]:
    """Read a YAML file and the chain of ``_base_`` files it extends. Returns (merged, sources)."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular _base_ chain")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is not a config file (at most "
                          f"{MAX_CONFIG_BYTES:,} bytes)")
    try:
        data = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("_base_", None)
    sources = [str(path)]
    if base:
        base_data, base_sources = _read_yaml((path.parent / base), _seen + (path,))
        # Validate this file's keys against the schema on their own, to name the right file.
        _build(Config, _deep_merge(config_to_dict(Config()), data), "", str(path))
        data = _deep_merge(base_data, data)
        sources = base_sources + sources
    return data, sources


def config_sources(path: str | os.PathLike) -> list[Path]:
    """The files a config file is read from: its ``_base_`` chain, the farthest base first and
    ``path`` last (each resolved)."""
    return [Path(p) for p in _read_yaml(Path(path))[1]]


def _set_path(tree: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {dotted!r} ({source}): {here!r} is not a valid index")
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                raise ConfigError(f"unknown config key {here!r} in override {dotted!r} ({source})")
            node = node[part]
        else:
            raise ConfigError(f"override {dotted!r} ({source}): {here!r} is not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {dotted!r} ({source}): {last!r} is not a valid index")
        node[int(last)] = value
    elif isinstance(node, dict):
        is_free_mapping = dotted.split(".")[-2:-1] == ["loss_weights"]
        if last not in node and not is_free_mapping:
            raise ConfigError(f"unknown config key {dotted!r} in override ({source})")
        node[last] = value
    else:
        raise ConfigError(f"override {dotted!r} ({source}): parent is not a section")


def apply_overrides(tree: dict, overrides: list[str], source: str = "command line") -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML 1.2) to a plain config dict."""
    tree = config_to_dict(tree)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} ({source}) must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = _load_yaml(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key.strip(), value, source)
    return tree


def read_config(path: str | os.PathLike | None = None,
                overrides: list[str] | None = None) -> Config:
    """Defaults ⊕ YAML file (with its ``_base_`` chain) ⊕ command-line overrides, each key and
    type checked. The values are not: :func:`fer_robust.validation.load_config` reads and checks."""
    tree = config_to_dict(Config())
    source = "defaults"
    if path is not None:
        data, sources = _read_yaml(Path(path))
        source = sources[-1]
        # Stages given in YAML replace the default list wholesale; each stage starts from defaults.
        tree = _deep_merge(tree, data)
        _build(Config, tree, "", source)  # names the file when its keys are wrong
    if overrides:
        tree = apply_overrides(tree, overrides)
        source = "command line"
    return _build(Config, tree, "", source)


def save_config(cfg: Config, path: str | os.PathLike, comment: str = "") -> None:
    """Write the resolved config as YAML (atomically), after ``comment`` (YAML comment lines)."""
    atomic_write_text(Path(path), comment + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
