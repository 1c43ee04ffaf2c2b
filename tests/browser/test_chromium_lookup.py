"""The browser test finds the system Chromium, and says how to get one when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser.web_ui import CHROMIUM_ENV, chromium_path


def test_missing_chromium_fails_and_names_make_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-chromium-here"
    monkeypatch.setenv(CHROMIUM_ENV, str(missing))
    with pytest.raises(pytest.fail.Exception) as failure:
        chromium_path()
    assert "make browser" in str(failure.value)
    assert str(missing) in str(failure.value)


def test_chromium_from_the_environment_variable_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    os.chmod(browser, 0o755)
    monkeypatch.setenv(CHROMIUM_ENV, str(browser))
    assert chromium_path() == str(browser)
