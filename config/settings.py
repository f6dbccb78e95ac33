"""The node's settings: one frozen, typed schema, validated once.

Sources, later wins: built-in defaults, ``HOME/config.toml``, environment
variables (the seed's names, see ``ENV_VARS``), then command-line flags.
Unknown sections and keys are errors that name the key. Each service is given
only its own section. This module is the only place that reads the
environment.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

__all__ = [
    "ApiConfig",
    "LogConfig",
    "StorageConfig",
    "StreamingConfig",
    "UhrpConfig",
    "P2pConfig",
    "UsageSyncConfig",
    "QuotaConfig",
    "DeliveryConfig",
    "AgentConfig",
    "MediaConfig",
    "Settings",
    "ConfigError",
    "ENV_VARS",
    "ENV_ALIASES",
    "HOME_ENV",
    "DEFAULT_API_PORT",
    "load_settings",
    "resolve_home",
    "render_default_toml",
    "flat_settings",
]

HOME_ENV = "OVERLAY_NODE_HOME"
DEFAULT_API_PORT = 8700
GIB = 1024**3


class ConfigError(ValueError):
    """A setting is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class ApiConfig:
    """HTTP API for local agents."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_API_PORT
    max_upload_bytes: int = 256 * GIB
    shutdown_grace_s: float = 5.0
    # Open client connections at most; past it a connection is answered 503
    # busy with Retry-After and closed (every connection holds a descriptor).
    max_connections: int = 10_000
    # Identity keys (hex) that may manage the node besides its own: policies,
    # receipts, content. With quota.enforcement = "off" everyone is the operator.
    operator_keys: tuple[str, ...] = ()
    # Prometheus /metrics, and the request counters and latency histograms
    # behind it (off: neither is kept, /metrics answers 404).
    metrics: bool = True


@dataclass(frozen=True)
class LogConfig:
    """What the daemon logs, and how."""

    # "text": human lines; "json": one JSON object per line (for a log pipeline).
    format: Literal["text", "json"] = "text"
    # One line per API request: client, method, path (without its query),
    # status, bytes, duration, and the identity or receipt charged.
    access: bool = True


@dataclass(frozen=True)
class StorageConfig:
    """Chunk store and metadata database."""

    chunk_size_kb: int = 1024
    backend: Literal["sqlite", "postgres"] = "sqlite"
    database_url: str = ""  # for postgres, e.g. postgresql://user@127.0.0.1:5432/db
    database_schema: str = "overlay_node"
    write_threads: int = 4
    min_free_disk_mb: int = 512
    scrub_mib_s: float = 16.0  # background re-hashing of stored chunks; 0 = none
    # The cache (content held but not pinned) is kept under the smaller of
    # these two bounds; a write past it evicts the coldest cached content
    # first. 0 turns a bound off.
    max_cache_bytes: int = 0
    max_cache_percent: float = 25.0  # of the size of the disk holding the home


@dataclass(frozen=True)
class StreamingConfig:
    """Serving and fetching streams."""

    buffer_size_mb: int = 64
    timeout_seconds: float = 300.0
    max_concurrent_streams_per_user: int = 5
    read_size_kb: int = 1024


@dataclass(frozen=True)
class UhrpConfig:
    """BRC-26 naming and advertising."""

    enabled: bool = True
    max_failover_hosts: int = 5


@dataclass(frozen=True)
class P2pConfig:
    """libp2p peers: listening, bootstrap, timeouts, advert lifetimes."""

    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4801",)  # not 4001: kubo's swarm port
    bootstrap: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0
    handshake_timeout_s: float = 5.0  # an inbound connection that has not finished its handshake by then is dropped
    stream_timeout_s: float = 30.0
    max_streams_per_peer: int = 8
    max_connections: int = 256
    target_peers: int = 8  # below this, a node asks new peers for others to dial
    upload_limit_mib_s: float = 0.0  # cap on chunk bytes served to peers; 0 = none
    gossip_heartbeat_s: int = 1
    advert_ttl_s: int = 48 * 3600
    advert_refresh_s: int = 22 * 3600
    advertise_cached: bool = True
    public_url: str = ""  # https://... when the node's HTTP API is reachable from outside
    # ISO 3166-1 alpha-2 code of where this node is (e.g. "DE"), carried in its
    # adverts; "" = not said. Used with delivery.geographic_routing_enabled.
    region: str = ""
    # Chunk requests that name no receipt are charged to the peer's identity
    # under these policies: node_policy for peers that advertise content (overlay
    # nodes), peer_policy for the rest. "" = node peers are served unlimited
    # (and recorded); other peers too, unless quota.enforcement requires receipts.
    peer_policy: str = ""
    node_policy: str = ""
    frame_budget_mib: int = 256  # chunk-protocol frames being received, all peers together


@dataclass(frozen=True)
class UsageSyncConfig:
    """Usage-counter gossip between nodes (the seed's "BRC-22 usage sync")."""

    topics: tuple[str, ...] = ("streaming", "quotas", "usage")
    interval_s: float = 1.0
    snapshot_s: float = 10.0
    threshold: float = 0.02
    stale_after_s: float = 30.0


@dataclass(frozen=True)
class QuotaConfig:
    """Quota policies and their enforcement."""

    enforcement: Literal["off", "optional", "required", "strict"] = "off"
    strict: bool = False
    burst_enabled: bool = True
    window_cleanup_hours: int = 24
    metrics_retention_days: int = 90
    on_partition: Literal["allow", "deny"] = "allow"
    policy_issuers: tuple[str, ...] = ()
    # With enforcement required: an agent's read that names no receipt (and has
    # none bound to its identity) is charged to its identity under this policy;
    # "" = such reads are refused (403 receipt_required).
    default_policy: str = ""
    # Default (non-strict) mode: once a node's view of a receipt's usage passes
    # this share of a limit, it admits only out of leases from the receipt's
    # owner, as strict mode does throughout. 1.0 = never.
    lease_above: float = 0.15


@dataclass(frozen=True)
class DeliveryConfig:
    """Caching and delivery."""

    cdn_cache_ttl_seconds: int = 3600
    # Full responses of compressible types, and chunks sent to peers that ask, compressed.
    compression_enabled: bool = False
    # Hosts in this node's p2p.region first (resolve, downloads), and copies
    # of content read often here kept in the region (replication.min_regional_copies).
    geographic_routing_enabled: bool = False
    # Downloads also draw on these HTTP(S) origins: URL templates with {hash}
    # (the content's hex SHA-256), e.g. "https://cdn.example.com/uhrp/{hash}".
    cdn_enabled: bool = False
    cdn_origins: tuple[str, ...] = ()
    # HTTP connections to one mirror at once, per download.
    mirror_connections: int = 1
    # Downloads of content not held here under way at once (readers', pins', copies').
    max_downloads: int = 32
    # Mirrors the operator did not name (from adverts, or an agent's
    # preferredHosts) may resolve to loopback or private addresses.
    mirror_private_addresses: bool = False


@dataclass(frozen=True)
class ReplicationConfig:
    """Copies of pinned content on other nodes (docs/caching.md)."""

    # Distinct nodes (this one included) that should hold each pinned content
    # published here; 1 = no replication.
    factor: int = 3
    # Whose requests to hold a copy this node accepts: "*" (any peer that
    # advertises the content), identity keys (hex), or none (empty).
    accept_from: tuple[str, ...] = ("*",)
    # Bytes this node holds as copies for others at most (0: as much as the cache budget).
    accept_max_bytes: int = 0
    check_s: float = 10.0  # how often copies are counted (holders that stopped answering are noticed)
    refresh_interval_s: float = 3600.0  # every holder of every pinned content is dialled again this often
    # Content whose demand here (deliveries, decayed with a one-hour half-life)
    # reaches this is popular: kept pinned here under a lease of
    # refresh_interval_s, renewed while demand holds (above half of this);
    # 0 = off.
    popular_demand: float = 8.0
    # Live copies a popular content should have in this node's region (with
    # delivery.geographic_routing_enabled), else in the whole overlay.
    min_regional_copies: int = 2


@dataclass(frozen=True)
class AgentConfig:
    """Features for AI agents using the local node."""

    streaming_enabled: bool = True
    priority_boost: bool = True
    prefetch_enabled: bool = False
    cost_optimization: bool = True
    bandwidth_mbps: float = 0.0  # shared cap on session reads over HTTP; 0 = none


@dataclass(frozen=True)
class MediaConfig:
    """Transcoding video into adaptive HLS and DASH (ffmpeg)."""

    max_jobs: int = 1  # transcodes at once: each keeps about 1.4 cores busy
    max_queued_jobs: int = 100  # waiting jobs; past it a submit is refused (503 busy)
    ladder: Literal["default", "seed"] = "default"  # default: 360p+720p; seed: 480p/720p/1080p/2160p
    x264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"
    max_source_duration_s: float = 4 * 3600.0


@dataclass(frozen=True)
class Settings:
    home: Path
    api: ApiConfig = field(default_factory=ApiConfig)
    log: LogConfig = field(default_factory=LogConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    uhrp: UhrpConfig = field(default_factory=UhrpConfig)
    p2p: P2pConfig = field(default_factory=P2pConfig)
    usage_sync: UsageSyncConfig = field(default_factory=UsageSyncConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    media: MediaConfig = field(default_factory=MediaConfig)

    @property
    def chunk_size(self) -> int:
        return self.storage.chunk_size_kb * 1024


SECTIONS: dict[str, type] = {name: hint for name, hint in typing.get_type_hints(Settings).items() if name != "home"}

# The seed's environment variables and the setting each one sets.
ENV_VARS: dict[str, str] = {
    "STREAMING_CHUNK_SIZE_KB": "storage.chunk_size_kb",
    "STREAMING_BUFFER_SIZE_MB": "streaming.buffer_size_mb",
    "STREAMING_TIMEOUT_SECONDS": "streaming.timeout_seconds",
    "MAX_CONCURRENT_STREAMS_PER_USER": "streaming.max_concurrent_streams_per_user",
    "BRC26_UHRP_ENABLED": "uhrp.enabled",
    "BRC26_MAX_FAILOVER_HOSTS": "uhrp.max_failover_hosts",
    "BRC22_USAGE_SYNC_TOPICS": "usage_sync.topics",
    "BRC31_QUOTA_ENFORCEMENT": "quota.enforcement",
    "QUOTA_ENFORCEMENT_STRICT": "quota.strict",
    "QUOTA_BURST_ENABLED": "quota.burst_enabled",
    "QUOTA_WINDOW_CLEANUP_HOURS": "quota.window_cleanup_hours",
    "QUOTA_METRICS_RETENTION_DAYS": "quota.metrics_retention_days",
    "CDN_CACHE_TTL_SECONDS": "delivery.cdn_cache_ttl_seconds",
    "COMPRESSION_ENABLED": "delivery.compression_enabled",
    "GEOGRAPHIC_ROUTING_ENABLED": "delivery.geographic_routing_enabled",
    "CDN_ENABLED": "delivery.cdn_enabled",
    "AGENT_STREAMING_ENABLED": "agent.streaming_enabled",
    "AGENT_PRIORITY_BOOST": "agent.priority_boost",
    "AGENT_PREFETCH_ENABLED": "agent.prefetch_enabled",
    "AGENT_COST_OPTIMIZATION": "agent.cost_optimization",
    "AGENT_BANDWIDTH_MBPS": "agent.bandwidth_mbps",
    "OVERLAY_NODE_API_PORT": "api.port",
    "OVERLAY_NODE_DATABASE_URL": "storage.database_url",
    "OVERLAY_NODE_BOOTSTRAP": "p2p.bootstrap",
}

# The conventional names of the same settings, read too; where a name of
# ENV_VARS sets the same setting, that one wins. DATABASE_URL alone does not
# choose PostgreSQL (another program's variable must not move a node's
# metadata): STORAGE_BACKEND=postgres or storage.backend does.
ENV_ALIASES: dict[str, str] = {
    "STORAGE_BACKEND": "storage.backend",
    "DATABASE_URL": "storage.database_url",
}

# Ranges checked after loading: (minimum, maximum) inclusive.
_BOUNDS: dict[str, tuple[float, float]] = {
    "api.port": (0, 65535),
    "api.max_upload_bytes": (0, 1 << 50),
    "api.shutdown_grace_s": (0, 600),
    "api.max_connections": (1, 1_000_000),
    "storage.chunk_size_kb": (4, 16384),
    "storage.write_threads": (1, 64),
    "storage.min_free_disk_mb": (0, 1 << 30),
    "storage.scrub_mib_s": (0, 1e5),
    "storage.max_cache_bytes": (0, 1 << 60),
    "storage.max_cache_percent": (0, 100),
    "streaming.buffer_size_mb": (1, 65536),
    "streaming.timeout_seconds": (0.1, 86400),
    "streaming.max_concurrent_streams_per_user": (1, 100000),
    "streaming.read_size_kb": (4, 16384),
    "uhrp.max_failover_hosts": (1, 1000),
    "p2p.connect_timeout_s": (0.1, 600),
    "p2p.handshake_timeout_s": (0.1, 600),
    "p2p.stream_timeout_s": (0.1, 3600),
    "p2p.max_streams_per_peer": (1, 1024),
    "p2p.max_connections": (1, 100000),
    "p2p.target_peers": (0, 1000),
    "p2p.upload_limit_mib_s": (0, 1e6),
    "p2p.frame_budget_mib": (1, 1 << 16),
    "p2p.gossip_heartbeat_s": (1, 120),
    "p2p.advert_ttl_s": (10, 7 * 24 * 3600),
    "p2p.advert_refresh_s": (5, 7 * 24 * 3600),
    "usage_sync.interval_s": (0.05, 3600),
    "usage_sync.snapshot_s": (0.5, 86400),
    "usage_sync.threshold": (0.0, 1.0),
    "usage_sync.stale_after_s": (1, 86400),
    "quota.window_cleanup_hours": (1, 100000),
    "quota.metrics_retention_days": (1, 100000),
    "quota.lease_above": (0.0, 1.0),
    "delivery.cdn_cache_ttl_seconds": (0, 1 << 31),
    "delivery.mirror_connections": (1, 64),
    "delivery.max_downloads": (1, 10_000),
    "agent.bandwidth_mbps": (0, 1e6),
    "replication.factor": (1, 64),
    "replication.accept_max_bytes": (0, 1 << 60),
    "replication.check_s": (0.1, 3600),
    "replication.refresh_interval_s": (10, 7 * 24 * 3600),
    "replication.popular_demand": (0, 1e9),
    "replication.min_regional_copies": (1, 64),
    "media.max_jobs": (1, 16),
    "media.max_queued_jobs": (1, 10_000),
    "media.max_source_duration_s": (1, 7 * 24 * 3600),
}

_REGION = re.compile(r"[A-Z]{2}")
_IDENTITY_KEY = re.compile(r"0[23][0-9a-fA-F]{64}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def resolve_home(flag: str | None = None) -> Path:
    """The data dir: ``--home``, else ``$OVERLAY_NODE_HOME``, else ~/.overlay-node."""
    raw = flag or os.environ.get(HOME_ENV) or "~/.overlay-node"
    return Path(raw).expanduser().absolute()


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert a TOML value or an environment string to the field's type."""
    origin = get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is Literal:
        if isinstance(value, str) and value.strip().lower() in get_args(hint):
            return value.strip().lower()
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(get_args(hint))}")
    elif origin is tuple:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    raise ConfigError(f"{key}: {value!r} is not a valid {getattr(hint, '__name__', hint)}")


def _apply(
    settings: Settings, dotted: Mapping[str, Any], source: str, sources: dict[str, str] | None = None
) -> Settings:
    by_section: dict[str, dict[str, Any]] = {}
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {section!r} (in {key!r})")
        hints = typing.get_type_hints(SECTIONS[section])
        if name not in hints:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        try:
            by_section.setdefault(section, {})[name] = _coerce(key, value, hints[name])
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if sources is not None:
            sources[key] = source
    for section, changes in by_section.items():
        settings = replace(settings, **{section: replace(getattr(settings, section), **changes)})
    return settings


def _flatten_toml(doc: Mapping[str, Any], path: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section!r} must be a [section] table")
        for name, value in table.items():
            flat[f"{section}.{name}"] = value
    return flat


def _validate(settings: Settings) -> None:
    if settings.storage.backend == "postgres" and not settings.storage.database_url:
        raise ConfigError(
            "storage.backend = postgres needs storage.database_url (or OVERLAY_NODE_DATABASE_URL, or DATABASE_URL)"
        )
    if settings.p2p.advert_refresh_s >= settings.p2p.advert_ttl_s:
        raise ConfigError("p2p.advert_refresh_s must be shorter than p2p.advert_ttl_s")
    if settings.p2p.public_url and not settings.p2p.public_url.startswith("https://"):
        raise ConfigError("p2p.public_url must be an https:// URL (BRC-26 adverts name HTTPS hosts)")
    if settings.p2p.region and not _REGION.fullmatch(settings.p2p.region):
        raise ConfigError(f"p2p.region: {settings.p2p.region!r} is not an ISO 3166-1 alpha-2 code like DE or US")
    if settings.delivery.geographic_routing_enabled and not settings.p2p.region:
        raise ConfigError("delivery.geographic_routing_enabled needs p2p.region (this node's ISO 3166 code)")
    if settings.delivery.cdn_enabled and not settings.delivery.cdn_origins:
        raise ConfigError("delivery.cdn_enabled needs delivery.cdn_origins (URL templates with {hash})")
    for template in settings.delivery.cdn_origins:
        if "{hash}" not in template or not re.fullmatch(r"https?://[^/\s{}]+/\S*", template):
            raise ConfigError(
                f"delivery.cdn_origins: {template!r} is not an http(s) URL template with {{hash}}"
                ' (e.g. "https://cdn.example.com/uhrp/{hash}")'
            )
    for key in settings.replication.accept_from:
        if key != "*" and not _IDENTITY_KEY.fullmatch(key):
            raise ConfigError(f'replication.accept_from: {key!r} is neither "*" nor a compressed identity key')
    for key in settings.api.operator_keys:
        if not _IDENTITY_KEY.fullmatch(key):
            raise ConfigError(
                f"api.operator_keys: {key!r} is not a compressed identity key (66 hex digits, 02 or 03 first)"
            )
    for key, (lo, hi) in _BOUNDS.items():
        section, name = key.split(".")
        value = getattr(getattr(settings, section), name)
        if not lo <= value <= hi:
            raise ConfigError(f"{key} = {value} is outside {lo}..{hi}")


def load_settings(
    home: Path,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    sources: dict[str, str] | None = None,
) -> Settings:
    """Defaults, then ``home/config.toml``, then environment, then ``overrides``.

    ``sources``, when given, is filled with where each setting that is not
    at its default came from (``section.name`` -> the file, the variable or
    "command line")."""
    settings = Settings(home=home)
    path = home / "config.toml"
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        settings = _apply(settings, _flatten_toml(doc, path), str(path), sources)
    env = os.environ if environ is None else environ
    for names in (ENV_ALIASES, ENV_VARS):  # the project's own names last: they win
        for var in sorted(names.keys() & env.keys()):
            settings = _apply(settings, {names[var]: env[var]}, f"environment variable {var}", sources)
    settings = _apply(settings, dict(overrides or {}), "command line", sources)
    _validate(settings)
    return settings


def flat_settings(settings: Settings) -> dict[str, Any]:
    """Every setting by its ``section.name``, in the schema's order."""
    return {
        f"{section}.{f.name}": getattr(getattr(settings, section), f.name)
        for section, cls in SECTIONS.items()
        for f in fields(cls)
    }


def set_in_config(home: Path, values: dict[str, Any]) -> None:
    """Set ``section.name`` settings in ``home/config.toml``, keeping the rest of
    the file as it is (comments too): a set or commented-out line of the key is
    replaced, else the key goes under its section's header. Written whole or
    not at all; the result must load."""
    path = home / "config.toml"
    lines = path.read_text().splitlines() if path.exists() else []
    for key, value in values.items():
        section, name = key.split(".", 1)
        line = f"{name} = {_toml_value(value)}"
        header = next((i for i, text in enumerate(lines) if text.strip() == f"[{section}]"), None)
        if header is None:
            lines += ["", f"[{section}]", line]
            continue
        end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        pattern = re.compile(rf"^\s*#?\s*{re.escape(name)}\s*=")
        found = [i for i in range(header + 1, end) if pattern.match(lines[i])]
        set_lines = [i for i in found if not lines[i].lstrip().startswith("#")]
        if found:
            lines[(set_lines or found)[0]] = line
        else:
            lines.insert(header + 1, line)
    text = "\n".join(lines) + "\n"
    _validate(_apply(Settings(home=home), _flatten_toml(tomllib.loads(text), path), str(path), None))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o600)
    os.replace(tmp, path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_default_toml() -> str:
    """A config file listing every setting at its default, commented out."""
    env_for = {v: k for k, v in ENV_ALIASES.items()}
    env_for |= {v: k for k, v in ENV_VARS.items()}  # the project's own name, where there are two
    lines = ["# overlay-node configuration. Uncomment a line to change it.", ""]
    defaults = Settings(home=Path("."))
    for section, cls in SECTIONS.items():
        lines.append(f"# {(cls.__doc__ or '').strip()}")
        lines.append(f"[{section}]")
        for f in fields(cls):
            value = getattr(getattr(defaults, section), f.name)
            env = env_for.get(f"{section}.{f.name}")
            note = f"  # env {env}" if env else ""
            lines.append(f"# {f.name} = {_toml_value(value)}{note}")
        lines.append("")
    return "\n".join(lines)
