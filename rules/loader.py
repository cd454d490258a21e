"""Load config.yaml: parse the YAML, map each key path to its line, and validate.

A problem in the file is reported, not raised. A YAML syntax error gives one problem and an
empty config. Otherwise every valid item is kept and every invalid one is reported (see
``rules.validate``). Environment references such as ``${SIMPUL_GATEWAY_TOKEN}`` stay
references: they are resolved when the hub starts, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rules.config import Config
from rules.problems import KeyPath, Problem, ProblemList
from rules.validate import validate_config

MERGE_KEY = "<<"

# PyYAML reads YAML 1.1, where 18:00 is the base-60 integer 1080. Times of day are common in
# this file, so these resolvers are YAML 1.1's int and float without the base-60 forms, and
# 18:00 stays text. Octal (010), hex (0x10) and binary (0b10) integers are still read.
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_NUMBER_TAGS = {"tag:yaml.org,2002:int": _INT, "tag:yaml.org,2002:float": _FLOAT}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without base-60 numbers."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, _NUMBER_TAGS.get(tag, pattern)) for tag, pattern in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class LoadedConfig:
    """A loaded config: the valid items only, and every problem found in the file."""

    config: Config
    problems: list[Problem]
    path: Path


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate the config file at ``path``; a file that cannot be read is one problem."""
    file = str(path)
    problems = ProblemList(file)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        problems.add((), "file_not_found")
    except UnicodeDecodeError:
        problems.add((), "file_encoding")
    except OSError as error:
        problems.add((), "file_unreadable", detail=error.strerror or str(error))
    else:
        return load_config_text(text, file)
    return LoadedConfig(config=Config(), problems=problems.sorted(), path=Path(path))


def load_config_text(text: str, filename: str) -> LoadedConfig:
    """Validate config text; ``filename`` is the name that problems report."""
    problems = ProblemList(filename)
    parsed = _parse(text, problems)
    if parsed is None:
        return LoadedConfig(config=Config(), problems=problems.sorted(), path=Path(filename))

    data, lines = parsed
    problems.lines = lines
    config = validate_config(data, problems)
    return LoadedConfig(config=config, problems=problems.sorted(), path=Path(filename))


def _parse(text: str, problems: ProblemList) -> tuple[object, dict[KeyPath, int]] | None:
    """Return the YAML data and the line of each key path, or None after reporting a syntax error."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        # Lines are read before constructing, because constructing inlines `<<` merge keys
        # into the node tree.
        lines, duplicates = _key_lines(root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as error:
        code, line, params = _describe_yaml_error(error)
        problems.add((), code, line=line, **params)
        return None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        problems.add((), "yaml_syntax", line=line, detail=str(error).splitlines()[0])
        return None
    except RecursionError:
        # PyYAML composes nested blocks recursively, so a few hundred levels exceed Python's stack.
        problems.add((), "yaml_too_deep")
        return None
    finally:
        loader.dispose()

    for path, line, first_line in duplicates:
        problems.add(path, "duplicate_key", line=line, key=path[-1], first_line=first_line)
    return data, lines


def _describe_yaml_error(error: yaml.MarkedYAMLError) -> tuple[str, int | None, dict[str, str]]:
    """Return the problem code, line and parameters for a YAML syntax error."""
    problem = error.problem or ""
    context = error.context or ""
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark is not None else None
    opened_at = error.context_mark.line + 1 if error.context_mark is not None else line

    if "'\\t'" in problem:
        return "yaml_tab", line, {}
    if "quoted scalar" in context:
        return "yaml_unclosed_quote", opened_at, {}
    if "flow" in context:
        return "yaml_flow", line, {}
    if problem.startswith("expected <block end>"):
        return "yaml_indentation", line, {}
    if problem.startswith("mapping values are not allowed"):
        return "yaml_mapping_value", line, {}
    if "expected a single document" in context:
        return "yaml_multiple_documents", line, {}
    alias = re.match(r"found undefined alias '?([^']*)'?", problem)
    if alias:
        return "yaml_undefined_alias", line, {"alias": alias.group(1)}
    detail = " ".join(part for part in (context, problem) if part)
    return "yaml_syntax", line, {"detail": detail}


def _key_lines(root: Node | None) -> tuple[dict[KeyPath, int], list[tuple[KeyPath, int, int]]]:
    """Map each key path in the node tree to the 1-based line of its key or list item.

    Also return each key written twice in one mapping, with its line and the line of the first
    one, because PyYAML keeps the last value silently. Keys merged in with ``<<: *anchor``
    take the line where the anchor defines them.
    """
    lines: dict[KeyPath, int] = {}
    duplicates: list[tuple[KeyPath, int, int]] = []
    if root is None:
        return lines, duplicates
    lines[()] = root.start_mark.line + 1

    def visit(node: Node, path: KeyPath, ancestors: tuple[int, ...]) -> None:
        if id(node) in ancestors:
            return
        inside = (*ancestors, id(node))
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                visit(item, (*path, index), inside)
        elif isinstance(node, MappingNode):
            visit_mapping(node, path, inside)

    def visit_mapping(node: MappingNode, path: KeyPath, ancestors: tuple[int, ...]) -> None:
        entries = [
            (str(key_node.value) if isinstance(key_node, ScalarNode) else "?", key_node, value_node)
            for key_node, value_node in node.value
        ]
        for key, _, value_node in entries:
            if key == MERGE_KEY:
                for merged in _merged_mappings(value_node):
                    visit_merged(merged, path, ancestors)

        written: dict[str, int] = {}
        for key, key_node, value_node in entries:
            line = key_node.start_mark.line + 1
            if key == MERGE_KEY:
                continue
            if key in written:
                duplicates.append(((*path, key), line, written[key]))
            written[key] = line
            lines[(*path, key)] = line
            visit(value_node, (*path, key), ancestors)

    def visit_merged(node: MappingNode, path: KeyPath, ancestors: tuple[int, ...]) -> None:
        # visit_mapping visits explicit keys after this, so their lines overwrite these, as
        # explicit values overwrite merged values.
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value != MERGE_KEY:
                lines[(*path, str(key_node.value))] = key_node.start_mark.line + 1
                visit(value_node, (*path, str(key_node.value)), ancestors)

    visit(root, (), ())
    return lines, duplicates


def _merged_mappings(node: Node) -> list[MappingNode]:
    if isinstance(node, MappingNode):
        return [node]
    if isinstance(node, SequenceNode):
        return [item for item in node.value if isinstance(item, MappingNode)]
    return []
