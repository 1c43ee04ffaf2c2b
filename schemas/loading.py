"""Reading requests from YAML or JSON files, with errors that name the field and the reason.

A request file is bounded before it is constructed (schemas/limits.py): its size, how deeply it
nests, and how many nodes it has once YAML aliases are expanded, counted on the parser's events
so that an alias bomb is refused without being built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from schemas.limits import (
    MAX_QASM_BYTES,
    MAX_REQUEST_FILE_BYTES,
    MAX_REQUEST_NESTING,
    MAX_REQUEST_NODES,
)
from schemas.request import ExperimentRequest

# libyaml when PyYAML was built with it: the pure-Python parser takes seconds on a large file.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Node counts beyond this are only compared with the limit; capping keeps an alias bomb's
# arithmetic small (ten levels of ten aliases is 10^10 nodes, a hundred levels 10^100).
NODE_COUNT_CAP = 10**18


class RequestError(ValueError):
    """A request that cannot be accepted; `problems` lists each field and reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid request\n" + "\n".join(f"  - {p}" for p in problems))


def describe_validation_error(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(request)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check its spelling; `qloop schema` lists the allowed ones)"
        problems.append(f"{location}: {message}")
    return problems


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_model(data: Any, model: type[ModelT], source: str = "request") -> ModelT:
    if not isinstance(data, dict):
        raise RequestError(
            source, [f"(request): expected a mapping of fields, got {type(data).__name__}"]
        )
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestError(source, describe_validation_error(error)) from None


def parse_request(data: Any, source: str = "request") -> ExperimentRequest:
    return parse_model(data, ExperimentRequest, source)


def read_file_data(path: Path) -> Any:
    """The parsed content of a YAML file, or JSON by its suffix; RequestError if it cannot be,
    or if it is larger, deeper or (aliases expanded) bigger than a request may be."""
    source = str(path)
    is_json = path.suffix == ".json"
    text = read_bounded(path, MAX_REQUEST_FILE_BYTES, source, "(file)")
    try:
        if is_json:
            data = json.loads(text)
            _check_shape(data, source)
            return data
        _check_yaml_shape(text, source)
        return yaml.load(text, Loader=YAML_LOADER)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise RequestError(
            source, [f"(file): not valid {'JSON' if is_json else 'YAML'}: {error}"]
        ) from None
    except RecursionError:
        raise _too_deep(source, "deeper than the parser can follow") from None


def read_bounded(path: Path, limit: int, source: str, field: str) -> str:
    """A UTF-8 text file of at most `limit` bytes; never reads more than one byte past it (a
    file may be a device or a pipe that never ends)."""
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise RequestError(source, [f"{field}: cannot read {path}: {error.strerror}"]) from None
    if len(data) > limit:
        size = path.stat().st_size if path.is_file() else 0
        value = f"{size:,} bytes" if size > limit else f"more than {limit:,} bytes"
        raise RequestError(source, [f"{field}: {path} has {value}; the limit is {limit:,}"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(
            source, [f"{field}: {path} is not UTF-8 text (byte {error.start})"]
        ) from None


def _check_yaml_shape(text: str, source: str) -> None:
    """Nesting depth and node count from the parser's events: an alias counts as the whole
    node it refers to, without anything being constructed."""
    anchored: dict[str, int] = {}
    open_nodes: list[tuple[int, str | None]] = []  # (nodes inside so far, anchor) per level
    total = deepest = 0
    for event in yaml.parse(text, Loader=YAML_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((1, event.anchor))
            deepest = max(deepest, len(open_nodes))
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            nodes, anchor = open_nodes.pop()
        elif isinstance(event, yaml.ScalarEvent):
            nodes, anchor = 1, event.anchor
        elif isinstance(event, yaml.AliasEvent):
            nodes, anchor = anchored.get(event.anchor or "", 1), None
        else:
            continue
        if anchor is not None:
            anchored[anchor] = nodes
        if open_nodes:
            inner, outer_anchor = open_nodes[-1]
            open_nodes[-1] = (min(inner + nodes, NODE_COUNT_CAP), outer_anchor)
        else:
            total = min(total + nodes, NODE_COUNT_CAP)
    _check_counts(deepest, total, source)


def _check_shape(data: Any, source: str) -> None:
    """Nesting depth and node count of parsed JSON, walked without recursion."""
    nodes = deepest = 0
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        node, depth = pending.pop()
        nodes += 1
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            pending.extend((child, depth + 1) for child in children)
            nodes += len(node) if isinstance(node, dict) else 0
    _check_counts(deepest, nodes, source)


def _check_counts(deepest: int, nodes: int, source: str) -> None:
    if deepest > MAX_REQUEST_NESTING:
        raise _too_deep(source, f"{deepest} levels deep")
    if nodes > MAX_REQUEST_NODES:
        value = f"more than {NODE_COUNT_CAP:,}" if nodes >= NODE_COUNT_CAP else f"{nodes:,}"
        raise RequestError(
            source,
            [
                f"(file): {value} values, keys and collections (YAML aliases expanded); "
                f"the limit is {MAX_REQUEST_NODES:,}"
            ],
        )


def _too_deep(source: str, depth: str) -> RequestError:
    return RequestError(
        source,
        [f"(file): mappings and lists nested {depth}; the limit is {MAX_REQUEST_NESTING} levels"],
    )


def load_model(path: str | Path, model: type[ModelT]) -> ModelT:
    """A request file of any kind (`qloop loop`, `qloop sweep`) checked against `model`."""
    path = Path(path)
    return parse_model(read_file_data(path), model, str(path))


def load_request(path: str | Path) -> ExperimentRequest:
    """Read a request file; `problem.qasm_file` is read relative to the request file."""
    path = Path(path)
    source = str(path)
    data = read_file_data(path)
    problem = data.get("problem") if isinstance(data, dict) else None
    if isinstance(problem, dict) and "qasm_file" in problem:
        if "qasm" in problem:
            raise RequestError(source, ["problem: give either qasm or qasm_file, not both"])
        qasm_path = path.parent / str(problem.pop("qasm_file"))
        problem["qasm"] = read_bounded(qasm_path, MAX_QASM_BYTES, source, "problem.qasm_file")
    return parse_request(data, source)
