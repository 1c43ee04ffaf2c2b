"""Issue 13, the provider-side backstop: `qloop budget set ACCOUNT ... --provider-backstop`
(through `starter.main`, against the real dev server with the worker's workflows in process)
puts the account's remaining budget into the QPU stand-in's spending limits, and then a task
submitted around qloop (plain boto3) that costs more than the account has left is refused by the
stand-in itself; inside qloop that refusal is a SpendingLimitError (Rejected) whose message
names the provider's spending limit, the device and what remained.

Guadalupe-16 costs $0.30 per task plus $0.0009 per shot: 100 shots are $0.39, 1000 are $1.20.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import starter
from activities.governance.budget_calls import reserve_budget
from activities.providers.provider_failures import as_application_error
from adapters.braket_aws import BraketAwsAdapter
from adapters.errors import InvalidRequestError, RejectedError, SpendingLimitError
from cli.output import EXIT_NOT_ALLOWED
from schemas import error_types
from schemas.budget import Reservation, ReserveBudgetInput
from schemas.execution import ProviderProgram
from tests.braket_calls import (
    BELL_PROGRAM,
    create_bell_task,
    delete_spending_limits,
    plain_client,
    refusal_of_bell_task,
    task_when_ended,
)
from tests.harness import OFFLINE_QPU, QPU, LocalStack
from tests.server_helpers import free_ports
from worker import WORKFLOWS, orchestration_activities
from workflows.experiment import backend_failure

pytestmark = pytest.mark.integration


@pytest.fixture
def braket(standin: LocalStack) -> Iterator[Any]:
    """A plain boto3 client of the stand-in (what someone going around qloop would use); no
    device has a spending limit before or after."""
    client = plain_client(standin.standin_url)
    standin.set_faults()
    delete_spending_limits(client)
    yield client
    delete_spending_limits(client)


@pytest_asyncio.fixture
async def task_queue(
    braket: Any, dev_server: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    queue = f"backstop-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
    monkeypatch.setenv("QLOOP_TASK_QUEUE", queue)
    async with Worker(
        dev_server.client,
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=orchestration_activities(),
    ):
        yield queue


async def qloop(*argv: str) -> int:
    # main() runs its own event loop, so it runs in a thread beside the test's (and the worker's).
    return await asyncio.to_thread(starter.main, list(argv))


async def backstop(account: str, limit_usd: str, capsys: pytest.CaptureFixture[str]) -> Any:
    """`qloop budget set ACCOUNT --limit-usd X --provider-backstop --json`, parsed."""
    code = await qloop(
        "budget", "set", account, "--limit-usd", limit_usd, "--provider-backstop", "--json"
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def _by_device(output: Any) -> dict[str, dict[str, Any]]:
    return {limit["device_arn"]: limit for limit in output["provider_backstop"]}


async def test_a_task_around_qloop_over_the_remaining_budget_is_refused_by_the_provider(
    task_queue: str,
    braket: Any,
    dev_server: WorkflowEnvironment,
    capsys: pytest.CaptureFixture[str],
) -> None:
    account = f"backstop-{uuid.uuid4().hex[:8]}"
    output = await backstop(account, "1.00", capsys)
    assert output["ledger"]["available_usd"] == 1.0
    # Every QPU the account may use (no policy file, ungoverned spending allowed: all of them),
    # the offline one too: a limit is about the device, not its state.
    limits = _by_device(output)
    assert set(limits) == {QPU, OFFLINE_QPU}
    assert limits[QPU]["limit_usd"] == "1.00"
    assert limits[QPU]["previous_limit_usd"] is None

    # $1.20 is more than the account has left: the stand-in refuses it, qloop never saw it.
    message = refusal_of_bell_task(braket, shots=1000)
    assert f"on device {QPU}" in message
    assert "estimated cost $1.20 exceeds the remaining $1.00 of the $1.00 spending limit" in message
    # What fits goes through.
    fits = create_bell_task(braket, shots=100)
    task_when_ended(braket, fits)

    # Money the ledger holds for a submission in flight is no longer available: after the next
    # `set` the limit is what it already counted ($0.39) plus what remains ($1.00 - $0.50).
    reservation = Reservation(
        key="exp-1/0", experiment_id="exp-1", amount_usd=0.5, backend=f"braket/{QPU}"
    )
    outcome = await reserve_budget(
        dev_server.client, task_queue, ReserveBudgetInput(account=account, reservation=reservation)
    )
    assert outcome.accepted
    again = _by_device(await backstop(account, "1.00", capsys))[QPU]
    assert (again["previous_limit_usd"], again["counted_usd"], again["remaining_usd"]) == (
        "1.00",
        "0.39",
        "0.50",
    )
    assert again["limit_usd"] == "0.89"
    assert "the remaining $0.50 of the $0.89 spending limit" in refusal_of_bell_task(
        braket, shots=1000
    )
    task_when_ended(braket, create_bell_task(braket, shots=100))
    assert "estimated cost $0.39 exceeds the remaining $0.11" in refusal_of_bell_task(
        braket, shots=100
    )


async def test_the_backstop_follows_the_accounts_policy(
    task_queue: str,
    braket: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    one_qpu, simulators = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("one-qpu", "sims"))
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        "accounts:\n"
        f"  {one_qpu}: {{allowed_backends: ['braket/{QPU}', 'aer/*']}}\n"
        f"  {simulators}: {{allowed_tiers: [simulator, noisy_simulator]}}\n"
    )
    monkeypatch.setenv("QLOOP_POLICY_FILE", str(policies))

    assert set(_by_device(await backstop(one_qpu, "20", capsys))) == {QPU}
    assert (await backstop(simulators, "20", capsys))["provider_backstop"] == []

    code = await qloop("budget", "set", one_qpu, "--limit-usd", "20", "--provider-backstop")
    out, _ = capsys.readouterr()
    assert code == 0
    assert "provider backstop: Braket spending limits leaving $20.00 on each QPU" in out
    assert "limit $20.00 = $0.00 already counted + $20.00 remaining (was $20.00;" in out

    # The provider out of reach: the ledger is set, and the command says the backstop is not.
    monkeypatch.setenv("QLOOP_BRAKET_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    code = await qloop("budget", "set", one_qpu, "--limit-usd", "30", "--provider-backstop")
    assert code == EXIT_NOT_ALLOWED
    err = capsys.readouterr().err
    assert "the ledger's limit is set, but not the provider backstop" in err
    assert "cannot reach the service" in err
    assert braket.search_spending_limits()["spendingLimits"][0]["spendingLimit"] == "20.00"


def test_qloop_classifies_the_refusal_as_the_provider_spending_limit(
    braket: Any, standin: LocalStack
) -> None:
    braket.create_spending_limit(clientToken=str(uuid.uuid4()), deviceArn=QPU, spendingLimit="1")
    program = ProviderProgram(name="bell", action=json.dumps(BELL_PROGRAM), device_parameters="{}")
    adapter = BraketAwsAdapter(QPU)
    with pytest.raises(SpendingLimitError) as raised:
        adapter.submit_programs([program], shots=1000, client_token=f"backstop-{uuid.uuid4()}")
    error = raised.value
    assert isinstance(error, RejectedError)  # workflows give the backend up for a fallback
    assert "refused by the provider's spending limit on the device" in error.message
    assert f"on device {QPU}" in error.message
    assert "exceeds the remaining $1.00 of the $1.00 spending limit" in error.message

    # The message is what the experiment's report carries as why it left the backend.
    crossing = as_application_error(error)
    assert crossing.type == error_types.REJECTED and crossing.non_retryable
    assert backend_failure(crossing) == error.message

    # Any other ValidationException of CreateQuantumTask stays an invalid request.
    with pytest.raises(InvalidRequestError) as invalid:
        adapter.submit_programs([program], shots=200_000, client_token=f"big-{uuid.uuid4()}")
    assert not isinstance(invalid.value, RejectedError)
    assert "shots must be between" in invalid.value.message
