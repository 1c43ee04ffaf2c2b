"""Issue 13's provider backstop on the whole local stack (dev server, worker process, QPU
stand-in, the CLI in its own process): spending around qloop is invisible to the ledger, but
not to the spending limit `qloop budget set --provider-backstop` put on the QPU. Once money has
gone around qloop, the stand-in refuses the next experiment's task although the ledger had room,
and the experiment's report says the provider's spending limit refused it.

Guadalupe-16 costs $0.30 per task plus $0.0009 per shot: 100 shots are $0.39.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError
from temporalio.client import Client

from schemas.budget import LedgerView
from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.braket_calls import create_bell_task, plain_client, task_when_ended
from tests.harness import QPU, LocalStack, run_qloop, running_stack

pytestmark = pytest.mark.integration

ACCOUNT = "backstopped"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    policies = {"accounts": {ACCOUNT: {"allowed_backends": [f"braket/{QPU}", "aer/*"]}}}
    folder = tmp_path_factory.mktemp("backstop")
    with running_stack(folder, "backstop", policies=policies, quiet=True) as local:
        yield local


async def test_money_spent_around_qloop_is_caught_by_the_provider_backstop(
    stack: LocalStack, client: Client
) -> None:
    env = stack.worker_env()
    code, out, err = await run_qloop(
        env, "budget", "set", ACCOUNT, "--limit-usd", "1", "--provider-backstop", "--json"
    )
    assert code == 0, err
    (limit,) = json.loads(out)["provider_backstop"]  # the one QPU the policy allows
    assert (limit["device_arn"], limit["limit_usd"]) == (QPU, "1.00")

    braket = plain_client(stack.standin_url)
    with pytest.raises(ClientError) as refused:
        create_bell_task(braket, shots=1000)  # $1.20: more than the account has
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "exceeds the remaining $1.00" in refused.value.response["Error"]["Message"]
    # $0.78 go around qloop: the ledger still shows $1.00 available, the provider $0.22.
    for _ in range(2):
        assert task_when_ended(braket, create_bell_task(braket))["status"] == "COMPLETED"
    tasks_before = len(stack.tasks())

    request = ExperimentRequest.model_validate(
        {
            "name": "backstop",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {
                "shots": 100,
                "seed": 5,
                "backend": {"provider": "braket", "device": QPU},
                "fallback": [{"provider": "aer", "device": "ideal"}],
            },
            "mitigation": {"zne": None, "readout": False},
            "policy": {"account": ACCOUNT},
        }
    )
    report = await client.execute_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request, polling=PollingPolicy(initial_seconds=0.25)),
        id=f"backstop-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=ExperimentReport,
    )
    assert report.status == "completed" and report.produced_by == "simulator"
    why = report.produced_by_reason
    assert "refused by the provider's spending limit on the device" in why, why
    assert f"on device {QPU}" in why
    assert "estimated cost $0.39 exceeds the remaining $0.22 of the $1.00 spending limit" in why
    assert len(stack.tasks()) == tasks_before  # nothing reached the QPU

    # The ledger gave its reservation back: nothing was billed through qloop.
    code, out, err = await run_qloop(env, "budget", "show", ACCOUNT, "--json")
    assert code == 0, err
    view = LedgerView.model_validate_json(out)
    assert (view.reserved_usd, view.committed_usd, view.available_usd) == (0, 0, 1.0)
