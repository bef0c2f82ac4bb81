"""A stack's replicas: where they are (service discovery), which one takes the next request
(power of two choices), and which are out of rotation after failures (ejection).

A stack is configured by one URL or a comma-separated list. Each plain-HTTP URL's host name is
resolved to *all* its addresses and re-resolved every `resolve_interval_s`: that is how Docker's
embedded DNS (`docker compose --scale`) and a Kubernetes headless Service both publish replicas,
so neither needs anything else. Each address is one replica. IP literals are used as given;
`localhost` and HTTPS URLs are kept as one replica under their name (a loopback name resolves to
::1 and 127.0.0.1 while a server listens on one; TLS needs the name for SNI and the certificate).

Why power of two choices over outstanding requests rather than least-outstanding over all: the
gateway may run several uvicorn workers, each counting only its own requests in flight; when every
worker sends to "the least loaded" replica at once they herd onto it, while two random candidates
and the less busy of the pair spreads them and costs O(1) a pick. With two replicas it is exactly
least-outstanding (ties broken at random).

Ejection: a replica that fails `breaker_failures` times in a row (no answer, a timeout, a 5xx) is
out of rotation for `breaker_cooldown_s`; then one request probes it, and its success puts it back.
A stack with one replica never ejects it: the data plane's per-stack breaker already answers for
the whole stack, and a lone replica has nowhere else to send the request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from yarl import URL

from gateway import metrics
from gateway.resilience import CircuitBreaker

log = logging.getLogger("twinserve.gateway")


@dataclass(frozen=True)
class Source:
    """One configured URL of a stack."""

    scheme: str
    host: str
    port: int
    resolve: bool  # a host name to resolve to all its addresses

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


def parse_sources(urls: str, backend: str) -> list[Source]:
    """The stack's URLs, checked: a ValueError names the backend and the bad URL."""
    sources = []
    for raw in filter(None, (u.strip() for u in urls.split(","))):
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{backend}: {raw!r} is not an http(s)://host[:port] URL")
        if parts.path not in ("", "/"):
            raise ValueError(f"{backend}: {raw!r} has a path; give the server's origin, e.g. http://host:8080")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        sources.append(Source(parts.scheme, parts.hostname, port, resolve=parts.scheme == "http" and parts.hostname != "localhost" and not is_ip(parts.hostname)))
    if not sources:
        raise ValueError(f"{backend}: no URL given")
    return sources


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def addresses(infos: list) -> list[str]:
    """The distinct addresses in getaddrinfo's answer, in a stable order."""
    return sorted({str(info[4][0]) for info in infos})


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Replica:
    """One server of a stack: its origin, requests in flight from this process, and its breaker."""

    def __init__(self, backend: str, source: Source, host: str, breaker: CircuitBreaker) -> None:
        self.backend = backend
        self.source = source  # the configured URL it was found under
        self.scheme = source.scheme
        self.host = host
        self.port = source.port
        self.label = hostport(host, source.port)
        self.origin = f"{source.scheme}://{self.label}"
        self.breaker = breaker
        self.in_flight = 0
        self.warm = True  # serving every model; a replica discovered later starts cold (see ReplicaSet)
        self._urls: dict[str, URL] = {}
        # metric children resolved once per replica
        self.outcomes = {o: metrics.REPLICA_REQUESTS.labels(backend, self.label, o) for o in ("ok", "rejected", "failed")}
        self.in_flight_gauge = metrics.REPLICA_IN_FLIGHT.labels(backend, self.label)
        self.ejected_gauge = metrics.REPLICA_EJECTED.labels(backend, self.label)
        self.ejected_gauge.set(0)

    def url(self, path: str) -> URL:
        """Parsed once per path (paths come from the model list, so the cache stays small)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.origin + path)
        return url

    def at_port(self, port: int) -> str:
        """This replica's address on another of its ports (TorchServe's management API)."""
        return f"{self.scheme}://{hostport(self.host, port)}"

    def record(self, outcome: str, eject: bool) -> None:
        """Count the attempt; with `eject` (a stack of several replicas) feed the replica's breaker."""
        self.outcomes[outcome].inc()
        if not eject:
            return
        before = self.breaker.state
        if outcome == "failed":
            self.breaker.failure()
        else:
            self.breaker.success()
        if self.breaker.state != before:
            ejected = self.breaker.state == CircuitBreaker.OPEN
            self.ejected_gauge.set(1 if ejected else 0)
            if ejected or before == CircuitBreaker.OPEN or self.breaker.state == CircuitBreaker.CLOSED:
                log.warning("%s replica %s %s", self.backend, self.label, "ejected after failures" if ejected else "back in rotation")

    def forget(self) -> None:
        """Gone from discovery: its gauges read 0 rather than its last value."""
        self.ejected_gauge.set(0)
        self.in_flight_gauge.set(0)


class ReplicaSet:
    """A stack's replicas, kept current by re-resolving its URLs."""

    def __init__(self, backend: str, urls: str, failures: int, cooldown_s: float, resolve_interval_s: float) -> None:
        self.backend = backend
        self.sources = parse_sources(urls, backend)
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.interval = resolve_interval_s
        self.replicas: list[Replica] = []
        self.unresolved: dict[str, str] = {}  # source name -> why it gave no address
        self._task: asyncio.Task | None = None
        self._started = False
        self._apply(self._resolve_blocking())
        self._started = True

    # discovery -------------------------------------------------------------
    def _resolve_blocking(self) -> list[tuple[Source, list[str] | str]]:
        """At start-up, before the event loop serves anything."""
        out: list[tuple[Source, list[str] | str]] = []
        for s in self.sources:
            try:
                out.append((s, addresses(socket.getaddrinfo(s.host, s.port, type=socket.SOCK_STREAM)) if s.resolve else [s.host]))
            except OSError as exc:
                out.append((s, exc.strerror or type(exc).__name__))
        return out

    async def _resolve(self) -> list[tuple[Source, list[str] | str]]:
        """Addresses per source, or why it gave none."""
        loop = asyncio.get_running_loop()
        out: list[tuple[Source, list[str] | str]] = []
        for s in self.sources:
            try:
                out.append((s, addresses(await loop.getaddrinfo(s.host, s.port, type=socket.SOCK_STREAM)) if s.resolve else [s.host]))
            except OSError as exc:
                out.append((s, exc.strerror or type(exc).__name__))
        return out

    def _apply(self, resolved: list[tuple[Source, list[str] | str]]) -> None:
        """Keep the replica objects (and their breakers and counts) of addresses still present."""
        current = {r.label: r for r in self.replicas}
        replicas: list[Replica] = []
        self.unresolved = {}
        for source, addresses in resolved:
            if isinstance(addresses, str):
                self.unresolved[source.name] = f"{source.host} did not resolve ({addresses})"
                # a name that stops resolving for a moment keeps its last replicas: DNS hiccups
                # should not empty a stack; a scale-down answers with fewer addresses instead
                replicas.extend(r for r in self.replicas if r.source == source and r not in replicas)
                continue
            for address in addresses:
                label = hostport(address, source.port)
                if any(r.label == label for r in replicas):
                    continue
                replicas.append(current.get(label) or Replica(self.backend, source, address, CircuitBreaker(self.failures, self.cooldown_s)))
        added = [r.label for r in replicas if r.label not in current]
        if self._started:
            for r in replicas:
                if r.label not in current:
                    r.warm = False
        gone = [r for r in self.replicas if r not in replicas]
        for r in gone:
            r.forget()
        if self.replicas and (added or gone):
            log.info("%s replicas now %s (added %s, removed %s)", self.backend, ", ".join(r.label for r in replicas) or "none", ", ".join(added) or "none", ", ".join(r.label for r in gone) or "none")
        self.replicas = replicas

    def start(self, ready: Callable[[Replica], Awaitable[bool]]) -> None:
        """Re-resolve in the background (needs the running loop); nothing to do for IP literals.
        `ready` tells whether a replica serves every model yet."""
        if self.interval > 0 and self._task is None and any(s.resolve for s in self.sources):
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever(ready))

    async def _refresh_forever(self, ready: Callable[[Replica], Awaitable[bool]]) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self._apply(await self._resolve())
                await self.warm_up(ready)
            except Exception:  # discovery must never stop serving with the replicas known
                log.exception("re-resolving %s's replicas failed", self.backend)

    async def warm_up(self, ready: Callable[[Replica], Awaitable[bool]]) -> None:
        """A replica found after start-up joins the rotation once it serves every model. Docker's DNS
        lists a container as soon as it runs, while TorchServe still loads its models (its inference
        port is open by then and answers 503); a Kubernetes headless Service lists only ready pods,
        so there this passes at the first look."""
        cold = [r for r in self.replicas if not r.warm]
        for replica, ok in zip(cold, await asyncio.gather(*(ready(r) for r in cold))):
            if ok:
                replica.warm = True
                log.info("%s replica %s serves every model: in rotation", self.backend, replica.label)

    async def refresh(self) -> None:
        self._apply(await self._resolve())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # selection -------------------------------------------------------------
    @property
    def ejects(self) -> bool:
        return len(self.replicas) > 1

    def pick(self, tried: set[Replica]) -> Replica | None:
        """Power of two choices over the replicas in rotation not yet tried for this request."""
        if not self.ejects:
            only = self.replicas[0] if self.replicas else None
            return only if only is not None and only not in tried else None
        candidates = [r for r in self.replicas if r not in tried and r.breaker.admits()]
        if not candidates:
            return None
        warm = [r for r in candidates if r.warm]
        candidates = warm or candidates  # a cold replica only when no warm one is left to try
        if len(candidates) == 1:
            chosen = candidates[0]
        else:
            a, b = random.sample(candidates, 2)
            chosen = a if a.in_flight < b.in_flight or (a.in_flight == b.in_flight and random.random() < 0.5) else b
        chosen.breaker.allow()  # half-open: this request is the probe
        return chosen

    def nothing_to_pick(self, tried: set[Replica]) -> str:
        """Why `pick` found no replica: the words of the error the client sees."""
        if not self.replicas:
            why = "; ".join(self.unresolved.values()) or "no address"
            return f"{self.backend} has no replica ({why})"
        ejected = [r for r in self.replicas if r not in tried]
        wait = min((r.breaker.retry_after() for r in ejected), default=0.0)
        return f"{self.backend}: every replica is out of rotation after failures ({', '.join(r.label for r in self.replicas)}); the next probe in {wait:.1f} s"
