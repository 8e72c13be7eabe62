"""Checks what Trimo sends (request bodies) against the shapes GitHub documents.

githubkit's body models are GitHub's OpenAPI description of each request. Answers are
never checked here: the stand-in serves what GitHub documents and sends, and githubkit's
response models do not always accept that.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def _members(model: Any) -> tuple[Any, ...]:
    if get_origin(model) in (Union, types.UnionType):
        return get_args(model)
    return (model,)


@functools.cache
def known_fields(model: Any) -> frozenset[str]:
    """Every top-level key some member of `model` declares."""
    names: set[str] = set()
    for member in _members(model):
        if isinstance(member, type) and issubclass(member, BaseModel):
            for name, info in member.model_fields.items():
                names.add(info.alias or name)
    return frozenset(names)


def _explain(exc: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(part) for part in error['loc']) or '(body)'}: {error['msg']}"
        for error in exc.errors()
    ]


def check(model: Any, data: Any) -> list[str]:
    """Problems with `data` as an instance of `model`; empty when it validates."""
    try:
        _adapter(model).validate_python(data)
    except ValidationError as exc:
        return _explain(exc)
    return []


def check_body(model: Any, body: Any) -> list[str]:
    """Like `check`, and also flags top-level keys the model does not know.

    githubkit's body models allow extra keys and GitHub ignores them silently, so an
    unknown key is almost always a misspelt field that would otherwise go unnoticed.
    """
    if not isinstance(body, dict):
        return [f"(body): expected a JSON object, got {type(body).__name__}"]
    problems = check(model, body)
    known = known_fields(model)
    problems += [f"{key}: not a field of this endpoint" for key in body if key not in known]
    return problems
