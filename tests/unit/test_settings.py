from __future__ import annotations

import argparse

from m3engine.settings import EngineSettings, add_arguments, from_sources


def test_cli_beats_env_beats_default() -> None:
    env = {"M3ENGINE_MAX_BATCH_TOKENS": "4096", "M3ENGINE_DEVICE": "cpu"}
    settings = from_sources(EngineSettings, {"max_batch_tokens": "1024"}, env)
    assert settings.max_batch_tokens == 1024  # CLI
    assert settings.device == "cpu"  # env
    assert settings.model == "BAAI/bge-m3"  # default


def test_every_field_is_a_flag_with_its_env_var_in_the_help() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = parser.format_help()
    for name in EngineSettings.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text
        assert "M3ENGINE_" + name.upper() in help_text.replace("\n", "").replace(" ", "")
    args = parser.parse_args(["--query-max-length", "64", "--model", "m"])
    settings = from_sources(EngineSettings, vars(args), env={})
    assert settings.query_max_length == 64 and settings.model == "m"


def test_serve_help_states_each_default_once(serve_parser: argparse.ArgumentParser) -> None:
    text = " ".join(serve_parser.format_help().split())  # one space between words
    assert "default 8080" in text
    # the flags' defaults are the settings' (shown with their env var); argparse's own would say None
    assert "(default: None)" not in text
