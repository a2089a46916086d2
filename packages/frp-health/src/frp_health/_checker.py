"""``HealthChecker``: the 0.4.0 API, active probing in one background task, passive reports."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random as _random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from .__about__ import __version__
from ._events import ChangeStream, Hub, StateChange, TargetSnapshot, TargetState
from ._probe import ProbeResult, make_client, probe, warm_up
from ._state import SUCCESS, HealthTable, Policy
from ._target import (
    Target,
    check_count,
    check_headers,
    check_method,
    check_number,
    check_path,
    check_statuses,
    parse_targets,
    resolve,
)

logger = logging.getLogger("frp_health")
_USER_AGENT = f"frp-health/{__version__}"


class HealthChecker:
    """Active and passive health of a fixed list of upstream targets.

    ``targets`` is a list of base URLs, or of dicts (``host``, ``pingpath``, ``maxrequests``,
    ``headers``, ``timeout``, ``method``, ``expected_statuses``).  ``start()`` (or
    ``async with``) probes every target once before returning, then one background task keeps
    probing; ``report()`` feeds the outcome of real requests.  See ``docs/frp-health.md``.
    """

    def __init__(
        self,
        targets: Sequence[str] | Sequence[Mapping[str, Any]],
        interval: float = 10,
        timeout: float = 5,
        httpx_client: httpx.AsyncClient | None = None,
        *,
        ping_path: str = "/",
        method: str = "HEAD",
        headers: Mapping[str, str] | None = None,
        expected_statuses: Iterable[int] = range(200, 400),
        unhealthy_threshold: int = 3,
        healthy_threshold: int = 2,
        unhealthy_interval: float | None = None,
        jitter: float = 0.1,
        active: bool = True,
        consecutive_failures: int | None = 5,
        base_ejection: float = 30.0,
        max_ejection: float = 300.0,
        max_ejected_percent: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
    ) -> None:
        parsed = parse_targets(targets)
        self._personalised = parsed.personalised
        self._interval = check_number("interval", interval)
        self._timeout = check_number("timeout", timeout)
        self._unhealthy_interval = (
            None
            if unhealthy_interval is None
            else check_number("unhealthy_interval", unhealthy_interval)
        )
        self._jitter = check_number("jitter", jitter, allow_zero=True, maximum=1.0)
        self._ping_path = check_path("ping_path", ping_path)
        self._method = check_method("method", method)
        self._headers = check_headers("headers", headers)
        self._expected = check_statuses("expected_statuses", expected_statuses)
        if consecutive_failures is not None:
            check_count("consecutive_failures", consecutive_failures)
        base = check_number("base_ejection", base_ejection)
        policy = Policy(
            unhealthy_threshold=check_count("unhealthy_threshold", unhealthy_threshold),
            healthy_threshold=check_count("healthy_threshold", healthy_threshold),
            consecutive_failures=consecutive_failures,
            base_ejection=base,
            max_ejection=check_number("max_ejection", max_ejection, minimum=base, allow_zero=True),
            max_ejected_percent=check_number(
                "max_ejected_percent", max_ejected_percent, allow_zero=True, maximum=100.0
            ),
        )
        if not isinstance(active, bool):
            raise TypeError(f"active must be a bool, not {type(active).__name__}")
        if httpx_client is not None and not isinstance(httpx_client, httpx.AsyncClient):
            raise TypeError(
                "httpx_client must be an httpx.AsyncClient or None, "
                f"not {type(httpx_client).__name__}"
            )
        self._active = active
        self._clock = clock
        self._random = random
        self._targets: dict[str, Target] = parsed.targets
        self._aliases: dict[str, str] = parsed.aliases
        self._configs: dict[str, dict[str, Any]] = parsed.configs
        self._table = HealthTable(
            self._targets, policy, active=active, now=clock(), method=self._method
        )
        for t in self._targets.values():
            if t.method is not None:
                self._table.records[t.url].method = t.method
        self._healthy: tuple[int, list[str]] = (-1, [])  # (generation, healthy targets)
        self._hub = Hub()
        self._client = httpx_client
        self._owns_client = httpx_client is None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        #: Checker-clock time of the end of the last probe round (0.4.0 name).
        self.last_update: float = clock()
        self._probed_since_update: set[str] = set()
        self._warm = False  # httpx's lazy imports done (see ``warm_up``)

    def __repr__(self) -> str:
        healthy = len(self.get_healthy_targets())
        mode = "running" if self.running else "active" if self._active else "passive-only"
        return f"<HealthChecker {healthy}/{len(self._targets)} healthy, {mode}>"

    # -- 0.4.0 properties --------------------------------------------------------------------

    @property
    def targets(self) -> list[str]:
        """Normalised base URLs, in the order given."""
        return list(self._targets)

    @property
    def target_configs(self) -> dict[str, dict[str, Any]]:
        """Per target: the dict it was configured with (``{}`` in standard mode)."""
        return self._configs

    @property
    def is_personalized(self) -> bool:
        """Whether targets were given as dicts (0.4.0 name)."""
        return self._personalised

    @property
    def ping_path(self) -> str:
        """The global probe path; ``RuntimeError`` in personalised mode, as in 0.4.0."""
        if self._personalised:
            raise RuntimeError("Global ping_path is not supported when using personalized hosts")
        return self._ping_path

    @ping_path.setter
    def ping_path(self, value: str) -> None:
        if self._personalised:
            raise RuntimeError("Global ping_path is not supported when using personalized hosts")
        self._ping_path = check_path("ping_path", value)

    @property
    def interval(self) -> float:
        """Seconds between probes of a routable target (before jitter)."""
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        self._interval = check_number("interval", value)

    @property
    def timeout(self) -> float:
        """Deadline of one probe in seconds (unless a target sets its own)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = check_number("timeout", value)

    @property
    def active(self) -> bool:
        """False for a passive-only checker: no probes, no task, no client of its own."""
        return self._active

    @property
    def httpx_client(self) -> httpx.AsyncClient | None:
        """The probe client (an internal one exists only once a probe has run)."""
        return self._client

    @property
    def running(self) -> bool:
        """Whether the background task is running."""
        return self._task is not None and not self._task.done()

    @property
    def status(self) -> dict[str, float | bool]:
        """Per target: latency in ms (probe EWMA, else traffic EWMA, else 0.0) or ``False``."""
        self._refresh()
        return {
            url: rec.latency_ms() if rec.state.routable else False
            for url, rec in self._table.records.items()
        }

    # -- queries -----------------------------------------------------------------------------

    def resolve(self, url: str) -> str | None:
        """The target ``url`` belongs to: an exact or normalised match, else the longest base
        URL that is a path-prefix of ``url``; ``None`` if none."""
        return resolve(self._targets, self._aliases, url)

    def is_healthy(self, target: str) -> bool:
        """Whether traffic may go to ``target`` (any URL under a target; unknown: False)."""
        url = self.resolve(target)
        if url is None:
            return False
        self._refresh()
        return self._table.records[url].state.routable

    def get_healthy_targets(self) -> list[str]:
        """Routable targets, in configuration order."""
        self._refresh()
        table = self._table
        if self._healthy[0] != table.generation:
            urls = [url for url, rec in table.records.items() if rec.state.routable]
            self._healthy = (table.generation, urls)
        return list(self._healthy[1])

    @property
    def generation(self) -> int:
        """A number that changes whenever a target's state may have changed (e.g. the set of
        healthy targets): a load balancer caches its candidates by it."""
        self._refresh()
        return self._table.generation

    def get_response_times(self) -> dict[str, float]:
        """Latency in ms of every routable target (0.4.0 shape, see ``status``)."""
        return {url: v for url, v in self.status.items() if v is not False}

    def get_fastest(self) -> str | None:
        """The routable target with the lowest latency (routing only to it herds: see docs)."""
        times = self.get_response_times()
        return min(times, key=times.__getitem__) if times else None

    def snapshot(self) -> dict[str, TargetSnapshot]:
        """A read-only view of every target, in configuration order."""
        self._refresh()
        now = self._clock()
        return {url: self._table.snapshot(url, now) for url in self._targets}

    def target_snapshot(self, target: str) -> TargetSnapshot:
        """The view of one target (``KeyError`` if unknown)."""
        url = self._require(target)
        self._refresh()
        return self._table.snapshot(url, self._clock())

    # -- passive health and subscriptions -----------------------------------------------------

    def report(self, target: str, outcome: str, latency: float | None = None) -> None:
        """Record the outcome of one real request to ``target`` (latency in seconds).

        ``outcome`` is an ``frp_core.Outcome`` value.  ``KeyError`` for an unknown target,
        ``ValueError`` for an unknown outcome.
        """
        url = self._aliases.get(target) or self._require(target)
        if latency is not None and not (type(latency) is float and 0.0 <= latency < math.inf):
            latency = check_number("latency", latency, allow_zero=True)
        self._refresh()
        table = self._table
        if outcome == SUCCESS:  # the common case: no clock read
            table.reported(url, SUCCESS, latency, 0.0)
            return
        change = table.reported(url, str(outcome), latency, self._clock())
        if change is not None:
            self._publish(change)
            if self._wake is not None:
                self._wake.set()  # the loop re-plans its sleep to re-admit on time

    def subscribe(self, callback: Callable[[StateChange], object]) -> Callable[[], None]:
        """Call ``callback(change)`` on every state change; returns a function to unsubscribe.

        Callbacks run synchronously on the event loop; their exceptions are logged and ignored.
        """
        return self._hub.subscribe(callback)

    def changes(self, maxlen: int = 1000) -> ChangeStream:
        """An async iterator of state changes from now on (``async for c in checker.changes()``)."""
        return ChangeStream(self._hub, check_count("maxlen", maxlen))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Probe every target once, then keep probing in one background task.

        A no-op when already running or when passive-only.
        """
        if not self._active or self._task is not None:
            return
        self._wake = asyncio.Event()
        first_round: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(first_round), name="frp_health.HealthChecker")
        try:
            await asyncio.wait({first_round, self._task}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._task.cancel()  # destroy()/stop() still awaits it
            raise

    async def stop(self) -> None:
        """End the background task, promptly even in the middle of a probe."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:  # pragma: no cover - _run catches everything
            logger.exception("health-check task failed")

    async def destroy(self) -> None:
        """Stop the task, close the client if this checker created it, end change streams."""
        await self.stop()
        self._hub.close()
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> HealthChecker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.destroy()

    async def check_all(self) -> None:
        """Probe every target now (whatever the schedule) and update its state."""
        await self._round(list(self._targets))

    # -- internals ---------------------------------------------------------------------------

    def _require(self, target: str) -> str:
        url = self.resolve(target)
        if url is None:
            raise KeyError(f"{target!r} is not one of this checker's targets {self.targets}")
        return url

    def _publish(self, change: StateChange) -> None:
        self._hub.publish(change)

    def _refresh(self) -> None:
        if not self._table.ejected:  # nothing to re-admit: no clock read
            return
        for change in self._table.expire(self._clock()):
            self._publish(change)

    def _jittered(self, base: float) -> float:
        return base * (1.0 + self._jitter * (2.0 * self._random() - 1.0))

    async def _round(self, urls: list[str]) -> None:
        if not self._warm:
            self._warm = True
            await warm_up()
        await asyncio.gather(*(self._probe_one(url) for url in urls))
        # Each target keeps its own (jittered) schedule; ``last_update``, which ends the
        # balancers' ``max_requests`` windows, moves once every target has been probed: once
        # per interval, as 0.4.0's whole-list rounds did.
        probed = self._probed_since_update
        probed.update(urls)
        if probed.issuperset(self._targets):
            probed.clear()
            self.last_update = self._clock()

    async def _probe_one(self, url: str) -> None:
        target = self._targets[url]
        rec = self._table.records[url]
        path = target.path if target.path is not None else self._ping_path
        headers = {"User-Agent": _USER_AGENT, **self._headers, **target.headers}
        try:
            if self._client is None:
                self._client = make_client()
            result = await probe(
                self._client,
                rec.method,
                url + path,
                headers,
                target.timeout or self._timeout,
                target.expected or self._expected,
            )
        except Exception as exc:  # a bug or a closed external client: a failed probe
            result = ProbeResult(False, None, None, f"error: {exc!r}", rec.method)
        self._refresh()
        now = self._clock()
        rec.method = result.method
        change = self._table.probed(url, result.ok, result.latency, result.error, now)
        down = rec.state is TargetState.UNHEALTHY
        base = self._unhealthy_interval if down and self._unhealthy_interval else self._interval
        if self._active:
            rec.next_probe_at = now + self._jittered(base)
        if change is not None:
            self._publish(dataclasses.replace(change, snapshot=self._table.snapshot(url, now)))

    def _next_wakeup(self) -> float:
        times = [
            r.next_probe_at for r in self._table.records.values() if r.next_probe_at is not None
        ]
        times += [
            r.ejected_until for r in self._table.records.values() if r.ejected_until is not None
        ]
        return min(times, default=self._clock() + self._interval)

    async def _run(self, first_round: asyncio.Future[None]) -> None:
        try:
            await self.check_all()
        except Exception:  # pragma: no cover - _probe_one catches everything
            logger.exception("health-check round failed")
        if not first_round.done():
            first_round.set_result(None)
        while True:
            try:
                wait = self._next_wakeup() - self._clock()
                if wait > 0 and self._wake is not None:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                self._refresh()
                now = self._clock()
                due = [
                    url
                    for url, rec in self._table.records.items()
                    if rec.next_probe_at is None or rec.next_probe_at <= now
                ]
                if due:
                    await self._round(due)
            except Exception:  # pragma: no cover - never let the loop die
                logger.exception("health-check loop error; retrying in %g s", self._interval)
                await asyncio.sleep(self._interval)
