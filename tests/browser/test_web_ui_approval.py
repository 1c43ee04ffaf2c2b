"""An approver uses the Temporal Web UI: finds the experiment awaiting approval by its search
attribute, opens it and sends the `approve` signal; the experiment completes with the approver
recorded.

Everything is real: the dev server with its Web UI and a qloop worker process (tests/harness.py),
the account policy from a YAML file, and headless Chromium driven through the pages a person
clicks. A second experiment that needs no approval must not show up in the search.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

import cli.start
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.browser.web_ui import Screenshots, TemporalWebUI, launch_chromium
from tests.harness import LocalStack

NAMESPACE = "default"
AWAITING_QUERY = "QloopAwaitingApproval = true"
APPROVAL = {"approver": "alice", "reason": "looks fine"}
POLICY = """\
accounts:
  ui-review:
    approval:
      required_for_tiers: [simulator, noisy_simulator, qpu]
      approvers: [alice]
      timeout: PT1H
      on_timeout: reject
"""


def ghz_request(name: str, account: str) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": name,
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {
                "shots": 200,
                "seed": 11,
                "backend": {"provider": "aer", "device": "ideal"},
            },
            "mitigation": {"zne": None, "readout": False},
            "policy": {"account": account},
        }
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    folder = tmp_path_factory.mktemp("web-ui")
    policy_file = folder / "policy.yaml"
    policy_file.write_text(POLICY)
    local = LocalStack(folder, task_queue=f"ui-{uuid.uuid4().hex[:8]}", web_ui=True)
    local.start()
    try:
        local.start_worker(extra_env={"QLOOP_POLICY_FILE": str(policy_file)})
        yield local
    finally:
        local.stop()


async def wait_until_listed(client: Client, query: str, timeout: float) -> None:
    """Until the visibility store, which the UI's search reads, answers the query."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (await client.count_workflows(query)).count == 0:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no workflow matched {query!r} within {timeout}s")
        await asyncio.sleep(0.5)


async def start_experiment(client: Client, request: ExperimentRequest) -> WorkflowHandle:
    return await cli.start.start(
        client, request, workflow_id=f"{request.name}-{uuid.uuid4().hex[:6]}", poll_ceiling=2.0
    )


async def test_approver_finds_and_approves_the_experiment_in_the_web_ui(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QLOOP_TASK_QUEUE", stack.task_queue)
    monkeypatch.delenv("QLOOP_COMPUTE_TASK_QUEUE", raising=False)
    client = await Client.connect(
        stack.address, namespace=NAMESPACE, data_converter=pydantic_data_converter
    )
    unreviewed = await start_experiment(client, ghz_request("ui-unreviewed", "default"))
    reviewed = await start_experiment(client, ghz_request("ui-reviewed", "ui-review"))
    # The worker imports qiskit and mitiq on a 2-core machine before it picks anything up.
    unreviewed_report = await asyncio.wait_for(unreviewed.result(), timeout=240)
    assert unreviewed_report.status == "completed"
    await wait_until_listed(
        client, f'WorkflowId = "{reviewed.id}" AND {AWAITING_QUERY}', timeout=120
    )

    screenshots_dir = tmp_path / "screenshots"
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright, tmp_path / "chromium-profile")
        page = await browser.new_page()
        screenshots = Screenshots(page, screenshots_dir)
        ui = TemporalWebUI(page, stack.ui_url, NAMESPACE)
        try:
            await ui.open_workflow_list()
            await screenshots.take("workflow-list")

            await ui.search(AWAITING_QUERY)
            await expect(ui.workflow_link(reviewed.id)).to_be_visible()
            await expect(ui.workflow_link(unreviewed.id)).to_have_count(0)
            await screenshots.take("awaiting-approval")

            await ui.open_workflow(reviewed.id)
            await expect(ui.status("Running")).to_be_visible()
            await screenshots.take("experiment-page")

            await ui.send_signal("approve", APPROVAL)
            await screenshots.take("signal-sent")

            # The page refreshes itself while the workflow runs.
            await expect(ui.status("Completed")).to_be_visible(timeout=180_000)
            await screenshots.take("completed")
        except Exception as error:
            await screenshots.take("failure")
            error.add_note(f"screenshots of each step: {screenshots_dir}")
            raise
        finally:
            await browser.close()

    report = await reviewed.result()
    assert isinstance(report, ExperimentReport)
    assert report.status == "completed", report.status_reason
    assert report.governance is not None
    (approval,) = report.governance.approvals
    assert approval.outcome == "approved"
    assert approval.decision is not None
    assert approval.decision.approver == APPROVAL["approver"]
    assert approval.decision.reason == APPROVAL["reason"]
    assert (
        await client.count_workflows(f'WorkflowId = "{reviewed.id}" AND {AWAITING_QUERY}')
    ).count == 0
