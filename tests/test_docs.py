"""The README documents every setting with its real default: its table is the one the
declarations in pipeline/settings.py generate."""

from __future__ import annotations

from pathlib import Path

from pipeline.settings import ENGINE_SETTINGS, settings_table

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_the_readme_settings_table_is_the_generated_one() -> None:
    assert settings_table() in README


def test_ccpipe_compute_has_a_flag_for_every_engine_setting() -> None:
    from pipeline.cli import build_parser

    compute = build_parser()._subparsers._group_actions[0].choices["compute"]  # type: ignore[union-attr]
    flags = {option for action in compute._actions for option in action.option_strings}
    assert {s.flag for s in ENGINE_SETTINGS} <= flags
