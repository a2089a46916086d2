"""Target configuration: URL normalisation and validation of everything given at construction."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: Keys a personalised target dict may carry; other keys are kept for other components.
KNOWN_KEYS = frozenset(
    {"host", "pingpath", "maxrequests", "headers", "timeout", "method", "expected_statuses"}
)


@dataclass(frozen=True, slots=True)
class Target:
    """One configured target: its normalised base URL and per-target probe settings."""

    url: str  #: normalised base URL: ``scheme://host[:port][/prefix]``
    raw: str  #: the string given at construction
    origin: str  #: ``scheme://host[:port]``
    prefix: str  #: path prefix without trailing slash ("" for none)
    path: str | None  #: per-target ping path (``None``: the global ``ping_path``)
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    method: str | None = None
    expected: frozenset[int] | None = None


def _origin(scheme: str, host: str, port: int | None) -> str:
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalise_url(raw: object) -> tuple[str, str, str]:
    """``(url, origin, prefix)`` for a base URL; raise ``ValueError``/``TypeError`` if unusable.

    Scheme and host are lower-cased, a default port (80/443) and trailing slashes dropped.
    """
    if not isinstance(raw, str):
        raise TypeError(f"target URL must be a str, not {type(raw).__name__}")
    text = raw.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"target {raw!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        hint = f" (did you mean 'http://{text}'?)" if "://" not in text else ""
        raise ValueError(f"target {raw!r} needs an http:// or https:// scheme{hint}")
    if not parts.hostname:
        raise ValueError(f"target {raw!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"target {raw!r}: credentials in the URL are not supported; "
            "send them with the 'headers' option"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"target {raw!r}: a base URL cannot have a query or fragment")
    origin = _origin(scheme, parts.hostname.lower(), port)
    prefix = parts.path.rstrip("/")
    return origin + prefix, origin, prefix


def _lookup_key(url: str) -> tuple[str, str] | None:
    """``(origin, path)`` of any URL, leniently (query ignored); ``None`` if it is no URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except (ValueError, AttributeError):
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in _DEFAULT_PORTS:
        return None
    return _origin(scheme, parts.hostname.lower(), port), parts.path


def resolve(targets: Mapping[str, Target], aliases: Mapping[str, str], url: str) -> str | None:
    """The target ``url`` belongs to: an alias (given or normalised string), else the target
    with the longest base URL that is a path-prefix of ``url``; ``None`` if none."""
    exact = aliases.get(url)
    if exact is not None:
        return exact
    key = _lookup_key(url)
    if key is None:
        return None
    origin, path = key
    best: Target | None = None
    for t in targets.values():
        under = path.rstrip("/") == t.prefix or path.startswith(t.prefix + "/")
        if t.origin == origin and under and (best is None or len(t.prefix) > len(best.prefix)):
            best = t
    return None if best is None else best.url


def check_number(
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    allow_zero: bool = False,
    maximum: float | None = None,
) -> float:
    """``value`` as a finite float in range, or a clear ``TypeError``/``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, not {value!r}")
    if number < minimum or (number == minimum and not allow_zero):
        bound = ">=" if allow_zero else ">"
        raise ValueError(f"{name} must be {bound} {minimum:g}, not {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, not {value!r}")
    return number


def check_count(name: str, value: object) -> int:
    """``value`` as an int >= 1, or a clear ``TypeError``/``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, not {value!r}")
    return value


def check_method(name: str, value: object) -> str:
    """An HTTP method token, upper-cased."""
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise ValueError(f"{name} must be an HTTP method such as 'HEAD' or 'GET', not {value!r}")
    return value.upper()


def check_statuses(name: str, value: object) -> frozenset[int]:
    """A non-empty set of HTTP status codes (any iterable of ints, e.g. ``range(200, 400)``)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an iterable of status codes, not {type(value).__name__}")
    codes = list(value)
    if not codes:
        raise ValueError(f"{name} cannot be empty")
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            raise ValueError(f"{name}: {code!r} is not an HTTP status code (100-599)")
    return frozenset(codes)


def check_headers(name: str, value: object) -> dict[str, str]:
    """A mapping of header names to values, both ``str``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping of header names to values")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise TypeError(f"{name}: header names and values must be str, got {key!r}: {val!r}")
        out[key] = val
    return out


def check_path(name: str, value: object) -> str:
    """A ping path (``"/health"``; a missing leading slash is added)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if "://" in value:
        raise ValueError(f"{name} must be a path such as '/health', not a URL: {value!r}")
    return "/" + value.lstrip("/")


def _from_dict(idx: int, item: Mapping[str, Any]) -> Target:
    where = f"targets[{idx}]"
    if "host" not in item:
        raise ValueError(f"{where} is missing the required 'host' key")
    url, origin, prefix = normalise_url(item["host"])
    timeout = item.get("timeout")
    method = item.get("method")
    expected = item.get("expected_statuses")
    maxreq = item.get("maxrequests")
    if maxreq is not None and (isinstance(maxreq, bool) or not isinstance(maxreq, int)):
        raise TypeError(f"{where}['maxrequests'] must be an int, not {type(maxreq).__name__}")
    return Target(
        url=url,
        raw=item["host"],
        origin=origin,
        prefix=prefix,
        path=check_path(f"{where}['pingpath']", item["pingpath"]) if "pingpath" in item else None,
        headers=check_headers(f"{where}['headers']", item.get("headers")),
        timeout=None if timeout is None else check_number(f"{where}['timeout']", timeout),
        method=None if method is None else check_method(f"{where}['method']", method),
        expected=None
        if expected is None
        else check_statuses(f"{where}['expected_statuses']", expected),
    )


@dataclass(slots=True)
class Parsed:
    """Validated targets: unique by normalised URL, in order of first appearance."""

    targets: dict[str, Target]  #: by normalised URL
    personalised: bool
    aliases: dict[str, str]  #: every string given (and each normalised URL) -> normalised URL
    configs: dict[str, dict[str, Any]]  #: the dict given per target ({} in standard mode)


def parse_targets(targets: object) -> Parsed:
    """Validate ``targets``.  Repeats of a URL collapse into one target, as in 0.4.0 (a list
    may repeat a URL to weight it in a balancer); two different dicts for one URL raise."""
    if isinstance(targets, str | bytes | Mapping) or not isinstance(targets, Sequence):
        raise TypeError(
            "targets must be a list of URL strings or a list of dicts, "
            f"not {type(targets).__name__}"
        )
    if not targets:
        raise ValueError("Targets list cannot be empty")
    first = targets[0]
    if not isinstance(first, str | Mapping):
        raise TypeError(
            "Targets must be a list of strings or a list of dictionaries, "
            f"got {type(first).__name__} at index 0"
        )
    out = Parsed({}, isinstance(first, Mapping), {}, {})
    seen: dict[str, int] = {}
    for idx, item in enumerate(targets):
        if out.personalised != isinstance(item, Mapping) or not isinstance(item, str | Mapping):
            raise TypeError(
                f"Mixed types in targets at index {idx}: use only strings or only dicts"
            )
        if isinstance(item, str):
            url, origin, prefix = normalise_url(item)
            target = Target(url=url, raw=item, origin=origin, prefix=prefix, path=None)
        else:
            target = _from_dict(idx, item)
        out.aliases[target.raw] = out.aliases[target.url] = target.url
        if target.url in seen:
            earlier = seen[target.url]
            if isinstance(item, Mapping) and dict(item) != dict(targets[earlier]):
                raise ValueError(
                    f"targets[{idx}] and targets[{earlier}] configure the same target "
                    f"{target.url!r} differently"
                )
            continue
        seen[target.url] = idx
        out.targets[target.url] = target
        out.configs[target.url] = dict(item) if isinstance(item, Mapping) else {}
    return out
