"""Plan settings from one validated file: defaults, overrides, and errors that name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from processor.settings import PlanFileError, PlanSettings, Settings, load_plan_file


def test_a_plan_file_sets_only_what_it_names_and_defaults_fill_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text("[plan]\ngrace_days = 45\n")
    plan = load_plan_file(path)
    assert plan.grace_days == 45
    assert plan.tolerance_cents == PlanSettings().tolerance_cents


@pytest.mark.parametrize(("name", "text"), [
    ("plan.yaml", "tolerance_cents: 250\ngrace_days: 10\n"),
    ("plan.json", '{"tolerance_cents": 250, "grace_days": 10}'),
    ("plan.toml", "tolerance_cents = 250\ngrace_days = 10\n"),
])
def test_toml_yaml_and_json_plan_files_give_the_same_settings(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    settings = Settings(plan_file=path, data_dir=tmp_path)
    assert (settings.plan.tolerance_cents, settings.plan.grace_days) == (250, 10)


def test_environment_plan_settings_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plan.toml"
    path.write_text("tolerance_cents = 250\ngrace_days = 10\n")
    monkeypatch.setenv("LEDGER_PLAN_FILE", str(path))
    monkeypatch.setenv("LEDGER_PLAN__GRACE_DAYS", "60")
    settings = Settings(data_dir=tmp_path)
    assert (settings.plan.tolerance_cents, settings.plan.grace_days) == (250, 60)


def test_an_invalid_value_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text("grace_days = -3\n")
    with pytest.raises(PlanFileError) as err:
        load_plan_file(path)
    assert str(path) in str(err.value) and "grace_days" in str(err.value)


def test_an_unknown_setting_is_an_error_not_ignored(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("grace_dayz: 30\n")
    with pytest.raises(PlanFileError, match="grace_dayz"):
        load_plan_file(path)


def test_a_file_that_is_not_valid_toml_says_so(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text("grace_days = = 3\n")
    with pytest.raises(PlanFileError, match="not valid TOML"):
        load_plan_file(path)


def test_a_missing_plan_file_fails_settings_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises((PlanFileError, ValidationError), match=r"nope\.toml"):
        Settings(plan_file=missing, data_dir=tmp_path)
