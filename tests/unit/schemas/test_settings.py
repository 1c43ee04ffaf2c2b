"""One validated configuration: every QLOOP_* variable is read into one object, an invalid value
is refused naming the variable and what is allowed (secrets never shown), `worker.py
--check-config` prints the effective configuration, and a production worker fails closed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.settings import (
    QloopSettings,
    SettingsError,
    current_settings,
    secret_variables,
    unknown_variables,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_defaults_and_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QLOOP_TASK_QUEUE", "QLOOP_COMPUTE_TASK_QUEUE", "QLOOP_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    defaults = current_settings()
    assert (defaults.task_queue, defaults.compute_task_queue, defaults.log_level) == (
        "qloop",
        None,
        "INFO",
    )
    monkeypatch.setenv("QLOOP_TASK_QUEUE", "fleet")
    monkeypatch.setenv("QLOOP_COMPUTE_TASK_QUEUE", "")  # empty is unset
    monkeypatch.setenv("QLOOP_LOG_LEVEL", "debug")
    monkeypatch.setenv("QLOOP_ALLOW_UNGOVERNED_SPEND", "1")
    changed = current_settings()
    assert (changed.task_queue, changed.compute_task_queue, changed.log_level) == (
        "fleet",
        None,
        "DEBUG",
    )
    assert changed.allow_ungoverned_spend


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("QLOOP_TASK_MEMORY_MB", "lots", "valid number"),
        ("QLOOP_MAX_CACHED_WORKFLOWS", "0", "greater than or equal to 1"),
        ("QLOOP_LOG_LEVEL", "loud", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("QLOOP_ALLOW_UNGOVERNED_SPEND", "yes", "set it to 1 to allow paid work"),
        ("QLOOP_ARTIFACT_URL", "ftp://host/x", "file:///absolute/folder or s3://bucket/prefix"),
        ("QLOOP_WORKER_ROLE", "both", "'all', 'orchestration' or 'compute'"),
        ("QLOOP_DEPLOYMENT", "prod", "'development' or 'production'"),
        ("QLOOP_BREAKER_FAILURES", "0", "greater than or equal to 1"),
        ("QLOOP_BREAKER_FAILURES", "2.5", "valid integer"),
        ("QLOOP_BREAKER_OPEN_SECONDS", "-1", "greater than 0"),
        ("QLOOP_BREAKER_OPEN_SECONDS", "soon", "valid number"),
        ("QLOOP_BREAKER_PROBE_LEASE_SECONDS", "inf", "finite number"),
        ("QLOOP_ARTIFACT_ENDPOINT_URL", "minio:9000", "http:// or https:// URL"),
    ],
)
def test_an_invalid_value_names_the_variable_and_what_is_allowed(
    name: str, value: str, allowed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        current_settings()
    assert f"{name}={value!r}: " in str(refused.value)
    assert allowed in str(refused.value)


def test_a_secret_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QLOOP_DATABASE_URL", "mysql://root:hunter2@db/qloop")
    with pytest.raises(SettingsError) as refused:
        current_settings()
    assert "QLOOP_DATABASE_URL=***" in str(refused.value)
    assert "hunter2" not in str(refused.value)
    assert "'mysql://root:***@db/qloop' is not a database" in str(refused.value)


def test_the_secret_variables_are_the_secret_settings() -> None:
    assert secret_variables() == {"QLOOP_CODEC_KEY", "QLOOP_DATABASE_URL"}


def test_unknown_qloop_variables_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QLOOP_POLICY_FIEL", "/etc/qloop/policies.yaml")
    assert "QLOOP_POLICY_FIEL" in unknown_variables()
    assert "QLOOP_POLICY_FILE" not in unknown_variables()


def test_production_refuses_what_would_spend_or_leak_without_rules() -> None:
    production = QloopSettings(deployment="production", allow_ungoverned_spend=True)
    refusals = production.production_refusals(codec_key_found=False)
    assert len(refusals) == 3
    assert any("QLOOP_POLICY_FILE is not set" in r for r in refusals)
    assert any("QLOOP_ALLOW_UNGOVERNED_SPEND=1" in r for r in refusals)
    assert any("no payload encryption key" in r for r in refusals)
    ready = QloopSettings(deployment="production", policy_file=Path("policies.yaml"))
    assert ready.production_refusals(codec_key_found=True) == []
    assert QloopSettings().production_refusals(codec_key_found=False) == []


def worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QLOOP_")}
    return subprocess.run(
        [sys.executable, "worker.py", *args],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_config_prints_the_effective_configuration_without_secrets(
    qloop_home: Path,
) -> None:
    done = worker(
        {
            "QLOOP_HOME": str(qloop_home),
            "QLOOP_DATABASE_URL": "postgresql://qloop:hunter2@db:5432/qloop",
            "QLOOP_TASK_QUEUE": "fleet",
            "QLOOP_STANDIN_PORT": "9321",
        },
        "--check-config",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "QLOOP_TASK_QUEUE=fleet" in lines
    assert "QLOOP_DATABASE_URL=*** (set)" in lines
    assert "QLOOP_MAX_DEPTH=3000  [default]" in lines
    assert "hunter2" not in done.stdout
    assert "not qloop settings (ignored): QLOOP_STANDIN_PORT" in lines


def test_a_production_worker_without_policy_or_key_refuses_to_start(qloop_home: Path) -> None:
    env = {"QLOOP_HOME": str(qloop_home), "QLOOP_DEPLOYMENT": "production"}
    checked = worker(env, "--check-config")
    assert checked.returncode == 1
    assert "production: refuses to start" in checked.stdout
    started = worker(env)
    assert started.returncode == 1
    assert "QLOOP_DEPLOYMENT=production refuses to start" in started.stderr
    assert "QLOOP_POLICY_FILE is not set" in started.stderr
    assert "no payload encryption key" in started.stderr
    invalid = worker({"QLOOP_HOME": str(qloop_home), "QLOOP_MAX_DEPTH": "deep"})
    assert invalid.returncode == 1
    assert "QLOOP_MAX_DEPTH='deep'" in invalid.stderr


def test_check_config_prints_digests_of_what_every_host_must_share(qloop_home: Path) -> None:
    """Two hosts with the same policy file and keys print the same lines; another key or
    policy prints another digest, and no key material is printed."""
    policy = REPO_ROOT / "temporal-dev" / "policies.yaml"
    key = "A" * 43 + "="
    env = {
        "QLOOP_HOME": str(qloop_home),
        "QLOOP_POLICY_FILE": str(policy),
        "QLOOP_CODEC_KEY": key,
        "QLOOP_CODEC_KEY_ID": "k7",
    }

    def shared_lines(changes: dict[str, str]) -> list[str]:
        done = worker({**env, **changes}, "--check-config")
        assert done.returncode == 0, done.stderr
        assert key not in done.stdout
        return [
            line for line in done.stdout.splitlines() if line.startswith(("policy file:", "codec"))
        ]

    first, again = shared_lines({}), shared_lines({})
    assert first == again
    assert first[0].startswith(f"policy file: {policy} sha256 ")
    assert "(accounts: audited, default, research, students)" in first[0]
    assert first[1].startswith("codec keys: k7 sha256 ") and first[1].endswith("encrypting with k7")
    other_key = shared_lines({"QLOOP_CODEC_KEY": "B" * 43 + "="})
    assert other_key[0] == first[0] and other_key[1] != first[1]
    other_policy = qloop_home / "policies.yaml"
    other_policy.write_text(policy.read_text() + "\n# changed on one host\n")
    changed = shared_lines({"QLOOP_POLICY_FILE": str(other_policy)})
    assert changed[0].split(" sha256 ")[1] != first[0].split(" sha256 ")[1]
