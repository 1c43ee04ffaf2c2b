"""No credential or key in logs or history.

A whole local stack (dev server, QPU stand-in, codec server) runs a worker and the `qloop` CLI
with realistic-looking AWS credentials and a codec key in their environment; an experiment goes
through the stand-in's Braket API. Then every log, every artifact and every history event (raw,
and decoded with the key) is searched for the AWS key id, secret and session token, the codec
key (raw, base64, hex) and the codec server's bearer token.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import string
import sys
import uuid
from collections.abc import Iterator

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from schemas.payload_encryption import KeyRing, decrypt_payload
from schemas.report import ExperimentReport
from tests.harness import REPO_ROOT, LocalStack

KEY_ID = "scan-key"


def random_text(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


AWS_ACCESS_KEY_ID = "AKIA" + random_text(string.ascii_uppercase + string.digits, 16)
AWS_SECRET_ACCESS_KEY = random_text(string.ascii_letters + string.digits + "+/", 40)
AWS_SESSION_TOKEN = "IQoJb3JpZ2luX2Vj" + random_text(string.ascii_letters + string.digits, 200)
CODEC_KEY = secrets.token_bytes(32)


def secret_forms(token: str) -> dict[str, bytes]:
    return {
        "AWS access key id": AWS_ACCESS_KEY_ID.encode(),
        "AWS secret access key": AWS_SECRET_ACCESS_KEY.encode(),
        "AWS session token": AWS_SESSION_TOKEN.encode(),
        "codec key (raw)": CODEC_KEY,
        "codec key (base64)": base64.b64encode(CODEC_KEY),
        "codec key (base64url)": base64.urlsafe_b64encode(CODEC_KEY).rstrip(b"="),
        "codec key (hex)": CODEC_KEY.hex().encode(),
        "codec server token": token.encode(),
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(
        tmp_path_factory.mktemp("scan"), task_queue=f"scan-{uuid.uuid4().hex[:8]}", codec=True
    )
    # The key reaches stack.sh (so the codec server uses it) and, through worker_env, every
    # qloop process; the key file stack.sh would otherwise create is never made.
    local.stack_env.update(
        QLOOP_CODEC_KEY=base64.b64encode(CODEC_KEY).decode(), QLOOP_CODEC_KEY_ID=KEY_ID
    )
    local.start()
    try:
        yield local
    finally:
        local.stop()


def qloop_env(stack: LocalStack) -> dict[str, str]:
    return {
        **stack.worker_env(),
        "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": AWS_SESSION_TOKEN,
        # DEBUG: the most any operator would turn on; credentials must stay out even then.
        "QLOOP_LOG_LEVEL": "DEBUG",
    }


def payloads_in(message: Message) -> Iterator[Payload]:
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    yield from payloads_in(item)
        elif field.is_repeated:
            for item in value:
                yield from payloads_in(item)
        else:
            yield from payloads_in(value)


async def test_no_credential_or_key_in_logs_artifacts_or_history(stack: LocalStack) -> None:
    stack.set_faults()
    env = qloop_env(stack)
    stack.start_worker(extra_env=env)
    workflow_id = f"scan-{uuid.uuid4().hex[:8]}"
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "starter.py", "run", "examples/qpu_standin.yaml", "--id", workflow_id,
        "--wait", "--json", "--poll-ceiling", "1",
        cwd=REPO_ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(cli.communicate(), timeout=300)
    worker_logs = sorted(stack.folder.glob("worker-*.log"))
    assert cli.returncode == 0, stderr.decode() + worker_logs[0].read_text()[-3000:]
    report = ExperimentReport.model_validate_json(stdout)
    assert report.produced_by == "hardware", report.status_reason
    assert [t["clientToken"] for t in stack.tasks()]  # the stand-in really was called

    client = await Client.connect(stack.address)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    raw_events = [event.SerializeToString() for event in history.events]
    ring = KeyRing(current=KEY_ID, keys={KEY_ID: CODEC_KEY}, source="test")
    decoded_payloads = [
        decrypt_payload(payload, ring).SerializeToString()
        for event in history.events
        for payload in payloads_in(event)
    ]
    assert any(report.experiment_id.encode() in data for data in decoded_payloads)

    token = (stack.qloop_home / "codec-server-token").read_text().strip()
    sources: dict[str, bytes] = {
        "qloop CLI output": stdout + stderr,
        "history (raw)": b"\n".join(raw_events),
        "history (JSON)": history.to_json().encode(),
        "history (decoded payloads)": b"\n".join(decoded_payloads),
    }
    logs = [*worker_logs, *sorted(stack.data_dir.glob("*.log"))]
    assert {path.name for path in logs} >= {
        "worker-0-all.log",
        "temporal.log",
        "qpu-standin.log",
        "s3.log",
        "codec-server.log",
    }
    sources |= {f"log {path.name}": path.read_bytes() for path in logs}
    artifacts = [p for p in (stack.qloop_home / "artifacts").rglob("*") if p.is_file()]
    assert artifacts
    sources |= {f"artifact {p.relative_to(stack.qloop_home)}": p.read_bytes() for p in artifacts}

    found = [
        f"{what} in {where}"
        for where, content in sources.items()
        for what, secret in secret_forms(token).items()
        if secret in content
    ]
    assert found == []
    assert not (stack.qloop_home / "codec-keys.json").exists()
