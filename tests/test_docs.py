"""The README documents every worker setting with its real default."""

from __future__ import annotations

from pathlib import Path

from pipeline.settings import WORKER_SETTINGS

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_worker_setting_is_in_the_readme_with_its_default() -> None:
    for setting in WORKER_SETTINGS:
        default = f"`{setting.default}`" if setting.default else "(none)"
        assert f"| `{setting.env}` | {default} |" in README, setting.env
