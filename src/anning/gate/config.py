"""The gate's configuration file (TOML): who may bind, what they send, where it goes.

Passwords of the accounts that bind to the gate are stored hashed (`anning smpp-gate
hash-password` prints the line): scrypt, salted, so a leaked file does not hand out the binds.
The upstream password is the one the gate must present to the SMSC, so it is kept as given (or
read from an environment variable). Every error names the key and the value at fault.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anning.gate.text import ALPHABETS

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - 3.10: the `gate` extra brings tomli
    import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]

__all__ = ["Account", "AnningSettings", "ConfigError", "GateConfig", "Upstream",
           "hash_password", "load_config", "parse_config", "verify_password"]

CATEGORIES = ("marketing", "notification")
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1}


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and the value."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt:N:r:p:SALT:HASH` (hex) of a bind password."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, **_SCRYPT)
    return f"scrypt:{_SCRYPT['n']}:{_SCRYPT['r']}:{_SCRYPT['p']}:{salt.hex()}:{digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a stored `scrypt:...` or `sha256:SALT:HASH` line (constant
    time compare). A scrypt check costs ~50 ms: call it off the event loop."""
    kind, _, rest = stored.partition(":")
    if kind == "scrypt":
        n, r, p, salt, digest = rest.split(":")
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n),
                             r=int(r), p=int(p))
    elif kind == "sha256":
        salt, digest = rest.split(":")
        got = hashlib.sha256(bytes.fromhex(salt) + password.encode("utf-8")).digest()
    else:
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def _check_stored(value: str, key: str) -> str:
    kind, _, rest = value.partition(":")
    parts = rest.split(":")
    try:
        if kind == "scrypt" and len(parts) == 5:
            int(parts[0]), int(parts[1]), int(parts[2])
            bytes.fromhex(parts[3]), bytes.fromhex(parts[4])
            return value
        if kind == "sha256" and len(parts) == 2:
            bytes.fromhex(parts[0]), bytes.fromhex(parts[1])
            return value
    except ValueError:
        pass
    raise ConfigError(f"{key}: {value[:16]!r}... is not a hashed password (scrypt:... or "
                      "sha256:SALT:HASH; `anning smpp-gate hash-password` makes one)")


@dataclass(frozen=True)
class Account:
    """A system_id that may bind to the gate, and what its traffic is."""

    system_id: str
    password: str  # hashed
    category: str = "marketing"
    entity: str | None = None  # its traffic is also the entity's: checked and replied to as it
    alphabet: str = "gsm"  # how its data_coding 0 is read
    ports: tuple[str, ...] = ()  # source_addr prefixes: MOs to them come to this account
    max_sessions: int = 8


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    window: int = 100  # submits in flight to the SMSC
    response_timeout: float = 30.0
    reconnect_seconds: float = 1.0


@dataclass(frozen=True)
class AnningSettings:
    target: str = "127.0.0.1:50051"  # the gRPC server (the default backend)
    token: str | None = None
    timeout: float = 0.5  # a check batch that takes longer: temporary error
    data: str | None = None  # in-process engine on this data directory instead


@dataclass(frozen=True)
class GateConfig:
    accounts: dict[str, Account]
    upstream: Upstream
    anning: AnningSettings = field(default_factory=AnningSettings)
    listen: str = "127.0.0.1:2775"
    metrics: str | None = None
    max_sessions: int = 100
    window: int = 10  # submits in flight per session; past it ESME_RTHROTTLED
    max_pdu_bytes: int = 4096
    suppressed_status: int = 0x45  # ESME_RSUBMITFAIL
    unavailable_status: int = 0x58  # ESME_RTHROTTLED: temporary, the platform retries
    default_country: int = 86
    concat_wait: float = 5.0  # seconds to wait for all parts of a long message
    reply_memory: int = 1_000_000  # (port, number) -> last sender, at most this many
    reply_memory_seconds: float = 7 * 86400.0
    enquire_link_seconds: float = 30.0
    batch_max: int = 2000  # checks in one backend call at most
    checks: bool = True  # False: a pass-through proxy (the benchmark's peer)


def _get(table: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...],
         default: Any = None, required: bool = False) -> Any:
    if key not in table:
        if required:
            raise ConfigError(f"{where}{key}: missing")
        return default
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}{key}: {value!r} is not {name}")
    return value


def _positive(value: float, key: str) -> float:
    if value <= 0:
        raise ConfigError(f"{key}: {value!r} must be above 0")
    return value


def _address(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: {value!r} is not HOST:PORT")
    return host, int(port)


def _status(value: int, key: str) -> int:
    if not 0 < value <= 0xFFFFFFFF:
        raise ConfigError(f"{key}: {value!r} is not an SMPP command_status (1..0xFFFFFFFF)")
    return value


def _unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise ConfigError(f"{where}{extra[0]}: unknown key (known: {', '.join(sorted(known))})")


def _account(raw: Any, i: int) -> Account:
    where = f"accounts[{i}]."
    if not isinstance(raw, dict):
        raise ConfigError(f"accounts[{i}]: {raw!r} is not a table")
    _unknown(raw, {"system_id", "password", "category", "entity", "alphabet", "ports",
                   "max_sessions"}, where)
    system_id = _get(raw, "system_id", where, str, required=True)
    if not 0 < len(system_id) <= 15 or not system_id.isascii() or not system_id.isprintable():
        raise ConfigError(f"{where}system_id: {system_id!r} is not 1-15 printable ASCII")
    password = _check_stored(_get(raw, "password", where, str, required=True),
                             f"{where}password")
    category = _get(raw, "category", where, str, "marketing")
    if category not in CATEGORIES:
        raise ConfigError(f"{where}category: {category!r} is not one of {', '.join(CATEGORIES)}")
    entity = _get(raw, "entity", where, str)
    if entity is not None and not 0 < len(entity.strip()) <= 64:
        raise ConfigError(f"{where}entity: {entity!r} is not a name of 1-64 characters")
    alphabet = _get(raw, "alphabet", where, str, "gsm")
    if alphabet not in ALPHABETS:
        raise ConfigError(f"{where}alphabet: {alphabet!r} is not one of {', '.join(ALPHABETS)}")
    ports = _get(raw, "ports", where, list, [])
    for j, port in enumerate(ports):
        if not isinstance(port, str) or not port:
            raise ConfigError(f"{where}ports[{j}]: {port!r} is not a port (text)")
    max_sessions = int(_positive(_get(raw, "max_sessions", where, int, 8),
                                 f"{where}max_sessions"))
    return Account(system_id, password, category, entity, alphabet, tuple(ports), max_sessions)


def parse_config(data: dict[str, Any]) -> GateConfig:
    """A GateConfig from the parsed TOML document."""
    _unknown(data, {"gate", "upstream", "anning", "accounts"}, "")
    gate = _get(data, "gate", "", dict, {})
    _unknown(gate, {"listen", "metrics", "max_sessions", "window", "max_pdu_bytes",
                    "suppressed_status", "unavailable_status", "default_country",
                    "concat_wait_seconds", "reply_memory", "reply_memory_seconds",
                    "enquire_link_seconds", "batch_max", "checks"}, "gate.")
    w = "gate."
    listen = _get(gate, "listen", w, str, "127.0.0.1:2775")
    _address(listen, "gate.listen")
    metrics = _get(gate, "metrics", w, str)
    if metrics is not None:
        _address(metrics if ":" in metrics else f"127.0.0.1:{metrics}", "gate.metrics")

    up = _get(data, "upstream", "", dict, required=True)
    _unknown(up, {"address", "system_id", "password", "password_env", "system_type",
                  "window", "response_timeout_seconds", "reconnect_seconds"}, "upstream.")
    host, port = _address(_get(up, "address", "upstream.", str, required=True),
                          "upstream.address")
    password = _get(up, "password", "upstream.", str, "")
    env = _get(up, "password_env", "upstream.", str)
    if env is not None:
        if env not in os.environ:
            raise ConfigError(f"upstream.password_env: {env!r} is not set in the environment")
        password = os.environ[env]
    upstream = Upstream(
        host, port, _get(up, "system_id", "upstream.", str, ""), password,
        _get(up, "system_type", "upstream.", str, ""),
        int(_positive(_get(up, "window", "upstream.", int, 100), "upstream.window")),
        float(_positive(_get(up, "response_timeout_seconds", "upstream.", (int, float), 30.0),
                        "upstream.response_timeout_seconds")),
        float(_positive(_get(up, "reconnect_seconds", "upstream.", (int, float), 1.0),
                        "upstream.reconnect_seconds")))

    an = _get(data, "anning", "", dict, {})
    _unknown(an, {"target", "token", "token_env", "timeout_seconds", "data"}, "anning.")
    token = _get(an, "token", "anning.", str)
    token_env = _get(an, "token_env", "anning.", str)
    if token_env is not None:
        token = os.environ.get(token_env) or token
    settings = AnningSettings(
        _get(an, "target", "anning.", str, "127.0.0.1:50051"), token,
        float(_positive(_get(an, "timeout_seconds", "anning.", (int, float), 0.5),
                        "anning.timeout_seconds")),
        _get(an, "data", "anning.", str))

    raw_accounts = _get(data, "accounts", "", list, required=True)
    accounts: dict[str, Account] = {}
    for i, raw in enumerate(raw_accounts):
        account = _account(raw, i)
        if account.system_id in accounts:
            raise ConfigError(f"accounts[{i}].system_id: {account.system_id!r} is listed twice")
        accounts[account.system_id] = account
    if not accounts:
        raise ConfigError("accounts: empty; at least one account must be able to bind")

    def number(key: str, kind: type | tuple[type, ...], default: float) -> float:
        return float(_positive(_get(gate, key, w, kind, default), w + key))

    return GateConfig(
        accounts=accounts, upstream=upstream, anning=settings, listen=listen, metrics=metrics,
        max_sessions=int(number("max_sessions", int, 100)),
        window=int(number("window", int, 10)),
        max_pdu_bytes=max(int(number("max_pdu_bytes", int, 4096)), 64),
        suppressed_status=_status(_get(gate, "suppressed_status", w, int, 0x45),
                                  "gate.suppressed_status"),
        unavailable_status=_status(_get(gate, "unavailable_status", w, int, 0x58),
                                   "gate.unavailable_status"),
        default_country=int(number("default_country", int, 86)),
        concat_wait=number("concat_wait_seconds", (int, float), 5.0),
        reply_memory=int(number("reply_memory", int, 1_000_000)),
        reply_memory_seconds=number("reply_memory_seconds", (int, float), 7 * 86400.0),
        enquire_link_seconds=number("enquire_link_seconds", (int, float), 30.0),
        batch_max=int(number("batch_max", int, 2000)),
        checks=_get(gate, "checks", w, bool, True),
    )


def load_config(path: str | os.PathLike[str]) -> GateConfig:
    """Read and check a TOML file; ConfigError names the file and the key."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not TOML: {exc}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
