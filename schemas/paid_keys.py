"""The names of a paid submission: its budget reservation key and its provider client token.

Both come from the workflow id, the submission's name within the workflow, a number and the
backend, never from the run id, so a run that was reset or continued as new asks for the same
reservation and the same provider job. The token is also a tag of every provider task
(`TOKEN_TAG`), which is how a reservation's tasks are found in the provider's own task list.
"""

from __future__ import annotations

import hashlib

TAG_PREFIX = "qloop:"
ACCOUNT_TAG = f"{TAG_PREFIX}account"
WORKFLOW_TAG = f"{TAG_PREFIX}workflow-id"
SUBMISSION_TAG = f"{TAG_PREFIX}submission"
NAME_TAG = f"{TAG_PREFIX}name"
TOKEN_TAG = f"{TAG_PREFIX}token"
TAG_VALUE_LIMIT = 256  # AWS tag values


def reservation_key(workflow_id: str, submission: str, number: int, backend: str) -> str:
    return f"{workflow_id}/{submission}/{number}/{backend}"


def client_token(key: str) -> str:
    """At most 64 characters, as Braket's clientToken allows; one per reservation key."""
    return f"qloop-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def task_tags(
    account: str, workflow_id: str, submission: str, name: str, token: str
) -> dict[str, str]:
    return {
        ACCOUNT_TAG: account,
        WORKFLOW_TAG: workflow_id[:TAG_VALUE_LIMIT],
        SUBMISSION_TAG: submission[:TAG_VALUE_LIMIT],
        NAME_TAG: name[:TAG_VALUE_LIMIT],
        TOKEN_TAG: token,
    }
