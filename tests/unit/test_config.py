"""Settings: defaults, TOML file, environment, command line; strict validation."""

from __future__ import annotations

import re
import tomllib
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest

from config.settings import (
    _BOUNDS,
    DEFAULT_API_PORT,
    ENV_ALIASES,
    ENV_VARS,
    HOME_ENV,
    SECTIONS,
    ConfigError,
    Settings,
    load_settings,
    render_default_toml,
    resolve_home,
)


def _hint(key: str) -> Any:
    section, name = key.split(".")
    return typing.get_type_hints(SECTIONS[section])[name]


def _default(key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(Settings(home=Path(".")), section), name)


def _get(settings: Settings, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(settings, section), name)


ALL_KEYS = [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls)]

# Values with a meaning the generic rule below would not respect.
SPECIAL_VALUES: dict[str, Any] = {
    "storage.database_url": "postgresql://user@127.0.0.1:5432/db",
    "p2p.public_url": "https://node.example",
    "p2p.listen": ("/ip4/127.0.0.1/tcp/4002",),
    "p2p.bootstrap": ("/dns4/peer.example/tcp/4001",),
    "api.operator_keys": ("02" + "ab" * 32,),
    "replication.accept_from": ("02" + "cd" * 32,),
    "p2p.region": "DE",
    "delivery.cdn_origins": ("https://cdn.example/uhrp/{hash}",),
}


# Settings that are only valid together with another one.
COMPANIONS: dict[str, dict[str, Any]] = {
    "storage.backend": {"storage.database_url": "postgresql://user@127.0.0.1:5432/db"},
    "delivery.cdn_enabled": {"delivery.cdn_origins": ("https://cdn.example/uhrp/{hash}",)},
    "delivery.geographic_routing_enabled": {"p2p.region": "DE"},
}


def changed_value(key: str) -> Any:
    """A valid value for ``key`` that differs from its default."""
    if key in SPECIAL_VALUES:
        return SPECIAL_VALUES[key]
    hint, default = _hint(key), _default(key)
    lo, hi = _BOUNDS.get(key, (-(2**31), 2**31))
    if hint is bool:
        return not default
    if hint is int:
        return default + 1 if default + 1 <= hi else default - 1
    if hint is float:
        return default / 2 if default and default / 2 >= lo else default + 0.5
    if hint is str:
        return default + "x"
    if get_origin(hint) is Literal:
        return next(v for v in get_args(hint) if v != default)
    if get_origin(hint) is tuple:
        return ("alpha", "beta")
    raise AssertionError(f"no test value for {key}: {hint}")


def as_env(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def write_toml(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_for(values: dict[str, Any]) -> str:
    by_section: dict[str, list[str]] = {}
    for key, value in values.items():
        section, name = key.split(".")
        by_section.setdefault(section, []).append(f"{name} = {toml_literal(value)}")
    return "".join(f"[{section}]\n" + "\n".join(lines) + "\n" for section, lines in by_section.items())


# --- Defaults and precedence ---


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={})
    assert s == Settings(home=tmp_path)
    assert s.home == tmp_path
    assert s.chunk_size == 1024 * 1024
    assert s.storage.chunk_size_kb == 1024
    assert s.api.host == "127.0.0.1"
    assert s.api.port == DEFAULT_API_PORT == 8700
    assert s.storage.backend == "sqlite"


def test_missing_home_directory_gives_defaults(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "does-not-exist", environ={})
    assert s == Settings(home=tmp_path / "does-not-exist")


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    write_toml(tmp_path, '[api]\nhost = "0.0.0.0"\nport = 9001\n\n[storage]\nchunk_size_kb = 64\n')
    s = load_settings(tmp_path, environ={})
    assert (s.api.host, s.api.port) == ("0.0.0.0", 9001)
    assert s.chunk_size == 64 * 1024
    assert s.streaming == Settings(home=tmp_path).streaming


def test_env_overrides_toml(tmp_path: Path) -> None:
    write_toml(tmp_path, "[api]\nport = 9001\n[storage]\nchunk_size_kb = 64\n")
    s = load_settings(tmp_path, environ={"OVERLAY_NODE_API_PORT": "9002"})
    assert s.api.port == 9002
    assert s.storage.chunk_size_kb == 64  # untouched by the environment


def test_cli_overrides_env_and_toml(tmp_path: Path) -> None:
    write_toml(tmp_path, "[api]\nport = 9001\n[storage]\nchunk_size_kb = 64\n")
    s = load_settings(
        tmp_path,
        {"api.port": 9003, "storage.chunk_size_kb": 128},
        environ={"OVERLAY_NODE_API_PORT": "9002", "STREAMING_CHUNK_SIZE_KB": "32"},
    )
    assert s.api.port == 9003
    assert s.storage.chunk_size_kb == 128


def test_environ_argument_replaces_the_process_environment(tmp_path: Path) -> None:
    # An explicit empty mapping means "no environment", whatever os.environ holds.
    s = load_settings(tmp_path, environ={})
    assert s == Settings(home=tmp_path)


def test_unrelated_environment_variables_are_ignored(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={"PATH": "/bin", "OVERLAY_NODE_NOPE": "1", "api.port": "1"})
    assert s == Settings(home=tmp_path)


@pytest.mark.parametrize("var", sorted(ENV_VARS))
def test_every_env_var_lands_on_its_setting(tmp_path: Path, var: str) -> None:
    key = ENV_VARS[var]
    value = changed_value(key)
    s = load_settings(tmp_path, COMPANIONS.get(key, {}), environ={var: as_env(value)})
    assert _get(s, key) == value
    assert _get(s, key) != _default(key)


@pytest.mark.parametrize("var", sorted(ENV_VARS))
def test_every_env_var_names_an_existing_setting(var: str) -> None:
    assert ENV_VARS[var] in ALL_KEYS


@pytest.mark.parametrize("var", sorted(ENV_ALIASES))
def test_every_conventional_name_names_an_existing_setting(var: str) -> None:
    assert ENV_ALIASES[var] in ALL_KEYS


def test_conventional_database_names_choose_postgres(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    s = load_settings(tmp_path, environ={"STORAGE_BACKEND": "postgres", "DATABASE_URL": url})
    assert (s.storage.backend, s.storage.database_url) == ("postgres", url)


def test_the_projects_own_name_wins_over_database_url(tmp_path: Path) -> None:
    ours, theirs = "postgresql://a@127.0.0.1/ours", "postgresql://b@127.0.0.1/theirs"
    sources: dict[str, str] = {}
    env = {"STORAGE_BACKEND": "postgres", "DATABASE_URL": theirs, "OVERLAY_NODE_DATABASE_URL": ours}
    s = load_settings(tmp_path, environ=env, sources=sources)
    assert s.storage.database_url == ours
    assert sources["storage.database_url"] == "environment variable OVERLAY_NODE_DATABASE_URL"


def test_database_url_alone_keeps_sqlite(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={"DATABASE_URL": "postgresql://someone-else@db/app"})
    assert s.storage.backend == "sqlite"


def test_storage_backend_postgres_without_a_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings(tmp_path, environ={"STORAGE_BACKEND": "postgres"})


@pytest.mark.parametrize("key", ALL_KEYS)
def test_every_setting_can_be_set_from_toml(tmp_path: Path, key: str) -> None:
    value = changed_value(key)
    write_toml(tmp_path, toml_for({key: value, **COMPANIONS.get(key, {})}))
    assert _get(load_settings(tmp_path, environ={}), key) == value


@pytest.mark.parametrize("key", ALL_KEYS)
def test_every_setting_can_be_set_from_the_command_line(tmp_path: Path, key: str) -> None:
    # The value is given in the field's own type, as a program would pass it.
    value = changed_value(key)
    overrides = {key: value, **COMPANIONS.get(key, {})}
    assert _get(load_settings(tmp_path, overrides, environ={}), key) == value


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"p2p.region": "de"}, "not an ISO 3166-1 alpha-2 code"),
        ({"p2p.region": "DEU"}, "not an ISO 3166-1 alpha-2 code"),
        ({"delivery.geographic_routing_enabled": True}, "needs p2p.region"),
        ({"delivery.cdn_enabled": True}, "needs delivery.cdn_origins"),
        ({"delivery.cdn_origins": ("https://cdn.example/file",)}, "with {hash}"),
        ({"delivery.cdn_origins": ("ftp://cdn.example/{hash}",)}, "not an http"),
        ({"delivery.cdn_origins": ("https:///{hash}",)}, "not an http"),
    ],
)
def test_settings_that_cannot_work_as_given_are_refused(tmp_path: Path, overrides: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(why)):
        load_settings(tmp_path, overrides, environ={})


@pytest.mark.parametrize(
    ("var", "raw", "key", "expected"),
    [
        ("BRC26_UHRP_ENABLED", "0", "uhrp.enabled", False),
        ("BRC26_UHRP_ENABLED", "no", "uhrp.enabled", False),
        ("BRC26_UHRP_ENABLED", "OFF", "uhrp.enabled", False),
        ("AGENT_PREFETCH_ENABLED", "1", "agent.prefetch_enabled", True),
        ("AGENT_PREFETCH_ENABLED", " Yes ", "agent.prefetch_enabled", True),
        ("AGENT_PREFETCH_ENABLED", "on", "agent.prefetch_enabled", True),
        ("BRC31_QUOTA_ENFORCEMENT", "STRICT", "quota.enforcement", "strict"),
        ("BRC31_QUOTA_ENFORCEMENT", " optional ", "quota.enforcement", "optional"),
        ("BRC22_USAGE_SYNC_TOPICS", "a, b ,,c", "usage_sync.topics", ("a", "b", "c")),
        ("BRC22_USAGE_SYNC_TOPICS", "", "usage_sync.topics", ()),
        ("STREAMING_TIMEOUT_SECONDS", "12", "streaming.timeout_seconds", 12.0),
        ("STREAMING_TIMEOUT_SECONDS", " 0.5 ", "streaming.timeout_seconds", 0.5),
        ("OVERLAY_NODE_API_PORT", " 9000 ", "api.port", 9000),
    ],
)
def test_env_string_coercion(tmp_path: Path, var: str, raw: str, key: str, expected: Any) -> None:
    assert _get(load_settings(tmp_path, environ={var: raw}), key) == expected


def test_toml_int_is_accepted_for_a_float(tmp_path: Path) -> None:
    write_toml(tmp_path, "[api]\nshutdown_grace_s = 7\n")
    s = load_settings(tmp_path, environ={})
    assert s.api.shutdown_grace_s == 7.0
    assert isinstance(s.api.shutdown_grace_s, float)


def test_toml_list_for_a_tuple(tmp_path: Path) -> None:
    write_toml(tmp_path, '[usage_sync]\ntopics = ["x", "y"]\n')
    assert load_settings(tmp_path, environ={}).usage_sync.topics == ("x", "y")


# --- Unknown keys and bad values ---


def test_unknown_toml_section_is_named(tmp_path: Path) -> None:
    write_toml(tmp_path, "[nosuch]\nport = 1\n")
    with pytest.raises(ConfigError, match="nosuch"):
        load_settings(tmp_path, environ={})


def test_unknown_toml_key_is_named(tmp_path: Path) -> None:
    write_toml(tmp_path, "[api]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"api\.prot"):
        load_settings(tmp_path, environ={})


def test_home_is_not_a_toml_section(tmp_path: Path) -> None:
    write_toml(tmp_path, '[home]\npath = "/x"\n')
    with pytest.raises(ConfigError, match="home"):
        load_settings(tmp_path, environ={})


def test_top_level_toml_key_is_named(tmp_path: Path) -> None:
    write_toml(tmp_path, "port = 1\n")
    with pytest.raises(ConfigError, match="port"):
        load_settings(tmp_path, environ={})


def test_nested_toml_table_is_named(tmp_path: Path) -> None:
    write_toml(tmp_path, "[api.extra]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"api\.extra"):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize("text", ["[api\nport = 1\n", "[api]\nport = \n", "[api]\nport = 1\nport = 2\n"])
def test_invalid_toml_is_a_config_error(tmp_path: Path, text: str) -> None:
    write_toml(tmp_path, text)
    with pytest.raises(ConfigError, match=r"config\.toml"):
        load_settings(tmp_path, environ={})


def test_non_utf8_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_bytes(b'[api]\nhost = "\xff\xfe"\n')
    with pytest.raises(ConfigError):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize("key", ["nosuch.port", "api.prot", "api", "home.x", ".port", "api."])
def test_unknown_override_key_is_named(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(key))):
        load_settings(tmp_path, {key: 1}, environ={})


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("OVERLAY_NODE_API_PORT", "abc"),
        ("OVERLAY_NODE_API_PORT", "80.5"),
        ("OVERLAY_NODE_API_PORT", ""),
        ("OVERLAY_NODE_API_PORT", "0x50"),
        ("STREAMING_CHUNK_SIZE_KB", "lots"),
        ("STREAMING_TIMEOUT_SECONDS", "soon"),
        ("BRC26_UHRP_ENABLED", "maybe"),
        ("BRC26_UHRP_ENABLED", ""),
        ("BRC26_UHRP_ENABLED", "2"),
        ("QUOTA_ENFORCEMENT_STRICT", "enabled"),
        ("BRC31_QUOTA_ENFORCEMENT", "sometimes"),
        ("BRC31_QUOTA_ENFORCEMENT", ""),
    ],
)
def test_bad_env_value_names_the_setting(tmp_path: Path, var: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(ENV_VARS[var])):
        load_settings(tmp_path, environ={var: raw})


@pytest.mark.parametrize(
    ("key", "toml_value"),
    [
        ("api.port", '"abc"'),
        ("api.port", "true"),
        ("api.port", "80.0"),
        ("api.port", "[80]"),
        ("api.host", "1"),
        ("api.host", "true"),
        ("api.shutdown_grace_s", '"soon"'),
        ("api.shutdown_grace_s", "false"),
        ("storage.chunk_size_kb", '"1MiB"'),
        ("storage.backend", '"mysql"'),
        ("storage.backend", "1"),
        ("uhrp.enabled", '"maybe"'),
        ("uhrp.enabled", "1"),
        ("quota.enforcement", '"always"'),
        ("quota.enforcement", "true"),
        ("usage_sync.topics", "[1, 2]"),
        ("usage_sync.topics", "3"),
    ],
)
def test_bad_toml_value_names_the_setting(tmp_path: Path, key: str, toml_value: str) -> None:
    section, name = key.split(".")
    write_toml(tmp_path, f"[{section}]\n{name} = {toml_value}\n")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("api.port", "abc"),
        ("api.port", True),
        ("api.port", 80.0),
        ("api.port", None),
        ("uhrp.enabled", "maybe"),
        ("uhrp.enabled", 1),
        ("storage.backend", "mysql"),
        ("quota.enforcement", "never"),
    ],
)
def test_bad_override_value_names_the_setting(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_settings(tmp_path, {key: value}, environ={})


def test_every_numeric_setting_has_bounds() -> None:
    numeric = [k for k in ALL_KEYS if _hint(k) in (int, float)]
    assert numeric
    assert sorted(numeric) == sorted(_BOUNDS)


def _out_of_range(key: str) -> list[Any]:
    lo, hi = _BOUNDS[key]
    if _hint(key) is int:
        return [int(lo) - 1, int(hi) + 1]
    return [lo - 0.01 if lo > 0 else lo - 1.0, hi + 1.0, float("nan"), float("inf"), float("-inf")]


OUT_OF_RANGE = [pytest.param(k, v, id=f"{k}={v}") for k in sorted(_BOUNDS) for v in _out_of_range(k)]


@pytest.mark.parametrize(("key", "value"), OUT_OF_RANGE)
def test_out_of_range_value_is_rejected(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_settings(tmp_path, {key: value}, environ={})


@pytest.mark.parametrize("key", sorted(_BOUNDS))
def test_bounds_are_inclusive(tmp_path: Path, key: str) -> None:
    lo, hi = _BOUNDS[key]
    cast = _hint(key)
    for value in (cast(lo), cast(hi)):
        overrides = {key: value}
        if key == "p2p.advert_refresh_s":  # must stay below the TTL
            overrides["p2p.advert_ttl_s"] = _BOUNDS["p2p.advert_ttl_s"][1]
            if value >= overrides["p2p.advert_ttl_s"]:
                continue
        if key == "p2p.advert_ttl_s":
            overrides["p2p.advert_refresh_s"] = _BOUNDS["p2p.advert_refresh_s"][0]
        assert _get(load_settings(tmp_path, overrides, environ={}), key) == value


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("OVERLAY_NODE_API_PORT", "70000"),
        ("OVERLAY_NODE_API_PORT", "-1"),
        ("STREAMING_CHUNK_SIZE_KB", "3"),
        ("STREAMING_CHUNK_SIZE_KB", "16385"),
        ("STREAMING_TIMEOUT_SECONDS", "0"),
        ("STREAMING_TIMEOUT_SECONDS", "nan"),
        ("BRC26_MAX_FAILOVER_HOSTS", "0"),
    ],
)
def test_out_of_range_env_value_is_rejected(tmp_path: Path, var: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(ENV_VARS[var])):
        load_settings(tmp_path, environ={var: raw})


def test_postgres_backend_needs_a_database_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="database_url"):
        load_settings(tmp_path, {"storage.backend": "postgres"}, environ={})
    s = load_settings(
        tmp_path, {"storage.backend": "postgres"}, environ={"OVERLAY_NODE_DATABASE_URL": "postgresql://u@h/db"}
    )
    assert s.storage.backend == "postgres"
    assert s.storage.database_url == "postgresql://u@h/db"


# --- The rendered default file ---

_SETTING_LINE = re.compile(r"^# (\w+ = .*)$")


def _uncommented_default_toml() -> str:
    return "\n".join(m[1] if (m := _SETTING_LINE.match(line)) else line for line in render_default_toml().splitlines())


def test_rendered_default_parses_and_lists_every_setting() -> None:
    doc = tomllib.loads(_uncommented_default_toml())
    assert set(doc) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        assert set(doc[section]) == {f.name for f in fields(cls)}, section
        for f in fields(cls):
            value = doc[section][f.name]
            default = _default(f"{section}.{f.name}")
            assert (tuple(value) if isinstance(value, list) else value) == default, f"{section}.{f.name}"


def test_rendered_default_is_entirely_commented_out() -> None:
    assert tomllib.loads(render_default_toml()) == {section: {} for section in SECTIONS}


def test_rendered_default_loads_back_to_the_defaults(tmp_path: Path) -> None:
    write_toml(tmp_path, _uncommented_default_toml())
    assert load_settings(tmp_path, environ={}) == Settings(home=tmp_path)


def test_rendered_default_names_every_env_var() -> None:
    text = render_default_toml()
    for var, key in ENV_VARS.items():
        name = key.split(".")[1]
        assert re.search(rf"^# {name} = .*# env {var}$", text, re.M), var


# --- Home directory ---


def test_resolve_home_flag_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "from-env"))
    assert resolve_home(str(tmp_path / "from-flag")) == tmp_path / "from-flag"


def test_resolve_home_env_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "from-env"))
    assert resolve_home() == tmp_path / "from-env"
    assert resolve_home(None) == tmp_path / "from-env"


def test_resolve_home_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert resolve_home() == tmp_path / "user" / ".overlay-node"


def test_resolve_home_empty_env_falls_back_to_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv(HOME_ENV, "")
    assert resolve_home() == tmp_path / "user" / ".overlay-node"


def test_resolve_home_expands_user_and_makes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv(HOME_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_home("~/node") == tmp_path / "user" / "node"
    assert resolve_home("relative/dir") == tmp_path / "relative" / "dir"
    assert resolve_home("relative/dir").is_absolute()
    monkeypatch.setenv(HOME_ENV, "~/env-node")
    assert resolve_home() == tmp_path / "user" / "env-node"
