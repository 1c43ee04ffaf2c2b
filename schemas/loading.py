"""Reading requests from YAML or JSON files, with errors that name the field and the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from schemas.request import ExperimentRequest


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
    """The parsed content of a YAML file, or JSON by its suffix; RequestError if it cannot be."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RequestError(source, [f"(file): cannot read it: {error.strerror}"]) from None
    is_json = path.suffix == ".json"
    try:
        return json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise RequestError(
            source, [f"(file): not valid {'JSON' if is_json else 'YAML'}: {error}"]
        ) from None


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
        try:
            problem["qasm"] = qasm_path.read_text(encoding="utf-8")
        except OSError as error:
            raise RequestError(
                source, [f"problem.qasm_file: cannot read {qasm_path}: {error.strerror}"]
            ) from None
    return parse_request(data, source)
