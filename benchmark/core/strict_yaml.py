"""The one YAML reader of the project: presets, submission manifests and metadata all come through it.

PyYAML's safe loader is safe against code, not against data that means something else than it
says: a duplicate key silently keeps the last value, ``yes``/``no``/``on``/``off`` become booleans
(``s2ap: [yes]`` read as "on"), ``.nan`` and ``.inf`` are numbers every range check lets through
(``nan < 0`` and ``nan > 1`` are both false), and a few lines of nested aliases expand to billions
of nodes once anything copies or serialises the result. This loader refuses each of those with a
message naming the file and line, and keeps what the presets rely on: anchors, aliases and merge
keys (``<<: *train``) within a bounded expanded size.

Booleans are YAML 1.2's: ``true``/``false`` (any case PyYAML's 1.1 resolver also spells that way);
every other word is a string, so ``off``/``on`` in a list are the strings the grid expects.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

# Expanded size (nodes, counting every alias as a full copy of its anchor) a document may reach:
# the largest preset is a few hundred nodes; an alias bomb reaches billions in a few lines.
MAX_NODES = 100_000
# Bytes a YAML file may have before it is read: presets and manifests are a few KiB.
MAX_BYTES = 1 << 20
MAX_DEPTH = 64


class StrictYAMLError(ValueError):
    """YAML the project refuses; the message names the file, the line and the reason."""


def _where(node: yaml.Node | None, source: str) -> str:
    if node is None or node.start_mark is None:
        return source
    return f"{source}:{node.start_mark.line + 1}"


class _StrictLoader(yaml.SafeLoader):
    source = "<yaml>"

    def compose_document(self):  # noqa: D401 - PyYAML's hook
        node = super().compose_document()
        _check_expansion(node, self.source)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise StrictYAMLError(f"{_where(key_node, self.source)}: a mapping key must be "
                                          f"a scalar, got {type(key).__name__}") from None
                if key in seen:
                    raise StrictYAMLError(
                        f"{_where(key_node, self.source)}: duplicate key {key!r} (first at line "
                        f"{seen[key].start_mark.line + 1}); YAML would silently keep the last one")
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise StrictYAMLError(f"{_where(node, self.source)}: {node.value!r} is not a finite "
                                  "number; NaN and infinity pass every range check, so none is accepted")
        return value


# YAML 1.2 booleans only: drop PyYAML's 1.1 resolver (yes/no/on/off/y/n) and add true/false back
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)


def _check_expansion(root: yaml.Node | None, source: str) -> None:
    """Refuse a document whose aliases expand past MAX_NODES or MAX_DEPTH. Sizes are memoised per
    node, so the check is linear in the document as written, however large its expansion."""
    if root is None:
        return
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    # iterative post-order: a deep document must not hit Python's recursion limit here
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES:
                raise StrictYAMLError(f"{_where(node, source)}: the document expands to more than "
                                      f"{MAX_NODES} nodes through its aliases (an alias bomb?)")
            if depth[key] > MAX_DEPTH:
                raise StrictYAMLError(f"{_where(node, source)}: nested deeper than {MAX_DEPTH} levels")
            continue
        if key in size:
            continue
        if key in on_path:
            raise StrictYAMLError(f"{_where(node, source)}: a recursive alias")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def loads(text: str, source: str = "<yaml>") -> Any:
    """Parse one YAML document strictly; ``source`` names it in messages."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise StrictYAMLError(f"{source}: larger than {MAX_BYTES} bytes")
    loader = _StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except StrictYAMLError:
        raise
    except RecursionError:
        raise StrictYAMLError(f"{source}: nested too deeply") from None
    except yaml.YAMLError as exc:
        raise StrictYAMLError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def load_file(path: str | Path) -> Any:
    """Read and parse a YAML file strictly: a regular file of at most MAX_BYTES, UTF-8."""
    path = Path(path)
    try:
        if not path.is_file():
            raise StrictYAMLError(f"{path}: not a regular file" if path.exists() else f"{path}: no such file")
        if path.stat().st_size > MAX_BYTES:
            raise StrictYAMLError(f"{path}: larger than {MAX_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise StrictYAMLError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise StrictYAMLError(f"{path}: cannot be read ({exc.strerror})") from None
    return loads(text, str(path))
