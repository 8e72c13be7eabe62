"""Webhook payload models: every recorded delivery of a handled event reads, and so do
drifted copies (fields Trimo can do without removed or nulled, unknown fields added)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from app.edge.payloads import (
    CheckRunEvent,
    InstallationEvent,
    InstallationRepositoriesEvent,
    IssueClosedEvent,
    IssueCommentEvent,
    IssueLabeledEvent,
    PullClosedEvent,
    ReviewCommentEvent,
)

MODELS: dict[str, type[BaseModel]] = {
    "issue_comment.created": IssueCommentEvent,
    "pull_request_review_comment.created": ReviewCommentEvent,
    "issues.labeled": IssueLabeledEvent,
    "issues.closed": IssueClosedEvent,
    "pull_request.closed": PullClosedEvent,
    "pull_request.labeled": PullClosedEvent,
    "check_run.requested_action": CheckRunEvent,
    "check_run.rerequested": CheckRunEvent,
    "installation.created": InstallationEvent,
    "installation.deleted": InstallationEvent,
    "installation_repositories.added": InstallationRepositoriesEvent,
}
OPTIONAL = [
    ("sender",),
    ("issue", "title"),
    ("issue", "user"),
    ("issue", "state"),
    ("comment", "user"),
    ("comment", "body"),
    ("pull_request", "title"),
    ("pull_request", "labels"),
    ("pull_request", "head", "repo"),
    ("repository", "default_branch"),
    ("repository", "owner"),
    ("label", "name"),
    ("check_run", "head_sha"),
    ("installation", "account"),
    ("repositories_added",),
]


def deliveries(corpora: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((corpora / "webhooks").glob("*.json")):
        name = path.name.rsplit(".", 2)[0]
        if name in MODELS:
            found.append((name, json.loads(path.read_text())))
    return found


def test_every_recorded_delivery_reads(corpora: Path) -> None:
    found = deliveries(corpora)
    assert len({name for name, _ in found}) == len(MODELS)
    for name, payload in found:
        MODELS[name].model_validate(payload)


@pytest.mark.parametrize("how", ["remove", "null", "unknown"])
def test_drifted_deliveries_read(corpora: Path, how: str) -> None:
    changed = 0
    for name, payload in deliveries(corpora):
        for path in OPTIONAL:
            node = payload
            for key in path[:-1]:
                node = node.get(key) or {}
            if path[-1] not in node:
                continue
            mutated = copy.deepcopy(payload)
            target = mutated
            for key in path[:-1]:
                target = target[key]
            if how == "remove":
                del target[path[-1]]
            elif how == "null":
                target[path[-1]] = None
            else:
                target["x_trimo_unknown"] = [None, {"a": 1}]
            MODELS[name].model_validate(mutated)
            changed += 1
    assert changed > 30


def first(corpora: Path, wanted: str) -> dict[str, Any]:
    return next(payload for name, payload in deliveries(corpora) if name == wanted)


def test_null_text_reads_as_default(corpora: Path) -> None:
    mutated = copy.deepcopy(first(corpora, "issue_comment.created"))
    mutated["issue"]["title"] = None
    mutated["issue"]["state"] = None
    mutated["repository"]["default_branch"] = None
    event = IssueCommentEvent.model_validate(mutated)
    assert (event.issue.title, event.issue.state) == ("", "open")
    assert event.repository.default_branch == "main"


def test_a_delivery_without_what_a_handler_needs_is_malformed(corpora: Path) -> None:
    mutated = copy.deepcopy(first(corpora, "issue_comment.created"))
    del mutated["issue"]["number"]
    with pytest.raises(ValidationError):
        IssueCommentEvent.model_validate(mutated)
