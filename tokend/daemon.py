"""The composition root: builds every part, runs it, and tears it down in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import aiohttp
import structlog
from aiohttp import web as aioweb

from tokend import (
    apptokens,
    budget,
    clock,
    config,
    connect,
    crypto,
    groupcommit,
    loop,
    metrics,
    probes,
    providers,
    quota,
    refresher,
    reload,
    store,
    stream,
    systemd,
    vending,
    web,
    webhooks,
)
from tokend.ebay import notifications, signing
from tokend.web import common

log = structlog.get_logger("tokend.daemon")

# After the grace for in-flight work, the rest of a stop (cancelled tasks, saves still
# retrying, the listener, the pool) gets this long; whatever is still running is abandoned.
TEARDOWN_SECONDS = 3.0
# `tokend run` exits this long after the deadline even if the event loop itself is stuck.
HARD_EXIT_MARGIN_SECONDS = 1.5


class SideTaskDied(Exception):
    """A task the daemon cannot run without ended on its own."""


class StartupError(Exception):
    """The daemon cannot start; the message is one line for the operator."""


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT only request a stop; the previous handlers come back after."""
    event_loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        event_loop.add_signal_handler(sig, _on_signal, sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            event_loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("stop_requested", signal=sig.name)
    stop.set()


@contextlib.asynccontextmanager
async def reload_on_signal(
    parts: Parts, load: Callable[[], config.Config] | None, watch_seconds: float | None,
) -> AsyncIterator[None]:
    """Given `load` (how the configuration was read): SIGHUP (`systemctl reload tokend`)
    re-reads the secrets, and so does a change the watch sees every `watch_seconds`.
    The previous SIGHUP handler comes back after."""
    if load is None:
        yield
        return
    reloader = reload.Reloader(parts.secrets, load)
    event_loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGHUP)
    event_loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    try:
        async with reload.watching(reloader, watch_seconds, parts.stop):
            yield
    finally:
        event_loop.remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, previous)


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def http_session(settings: config.RefreshConfig) -> aiohttp.ClientSession:
    """The one provider-facing HTTP session of a process; every call is time-bounded."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.concurrency * 2),
        timeout=aiohttp.ClientTimeout(total=settings.request_timeout_seconds))


class Shutdown:
    """How long a stop may take, whatever the database does: `grace_seconds` for in-flight
    work, then TEARDOWN_SECONDS for the rest. A step still running at the deadline is
    abandoned and logged, and the process exits non-zero instead of hanging on it."""

    def __init__(self, grace_seconds: float, drain_seconds: float = 0.0) -> None:
        self.grace_seconds = grace_seconds
        self.drain_seconds = drain_seconds  # the listener lingers this long after the stop
        self.deadline: float | None = None  # time.monotonic(), set when the stop begins
        self.abandoned: list[str] = []

    def begin(self) -> None:
        if self.deadline is None:
            self.deadline = (time.monotonic() + max(self.grace_seconds, self.drain_seconds)
                             + TEARDOWN_SECONDS)

    def remaining(self) -> float:
        """Seconds left; a teardown that began without a stop (a failed start, a test) has
        TEARDOWN_SECONDS from now."""
        if self.deadline is None:
            return TEARDOWN_SECONDS
        return max(self.deadline - time.monotonic(), 0.0)

    def abandon(self, *what: str) -> None:
        log.error("shutdown_abandoned", steps=list(what))
        self.abandoned.extend(what)

    async def bounded(self, name: str, step: Callable[[], Awaitable[object]]) -> None:
        """Await `step()` until the deadline; past it the step is cancelled and abandoned,
        not awaited (it may be stuck on a socket that never answers)."""
        task = asyncio.ensure_future(step())
        done, _ = await asyncio.wait({task}, timeout=self.remaining())
        if not done:
            task.cancel()
            self.abandon(name)
        elif not task.cancelled() and task.exception() is not None:
            log.error("shutdown_step_failed", step=name, error=repr(task.exception()))


def arm_hard_exit(seconds: float) -> threading.Timer:
    """The last line of the bound: end the process `seconds` from now, from a thread, so
    not even a stuck event loop can keep a stopping daemon alive. Only for `tokend run`."""

    def hard_exit() -> None:
        log.critical("shutdown_overrun", seconds=seconds)
        sys.stdout.flush()
        os._exit(1)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()
    return timer


@dataclasses.dataclass(frozen=True)
class Parts:
    """Everything a tokend process is made of, built once by `assemble`."""

    cfg: config.Config
    instance: str
    stop: asyncio.Event
    notifier: systemd.Notifier
    keyring: crypto.Keyring
    secrets: reload.Secrets
    stats: metrics.Metrics
    db: store.Store
    session: aiohttp.ClientSession
    hub: stream.Hub
    refresher: refresher.Refresher
    loop: loop.Loop
    vendor: vending.Vendor
    deliverer: webhooks.Deliverer
    readiness: probes.Readiness
    connect: connect.Service
    app: aioweb.Application
    app_tokens: apptokens.AppTokens
    ebay_receiver: notifications.Receiver | None
    shutdown: Shutdown
    signer: signing.Signer


@contextlib.asynccontextmanager
async def assemble(
    cfg: config.Config, *, instance: str | None = None, stop: asyncio.Event | None = None,
    db: store.Store | None = None, keyring: crypto.Keyring | None = None,
) -> AsyncIterator[Parts]:
    """Build every part of a daemon from `cfg` and tear it down in reverse.

    `tokend run`, `tokend refresh`, the demo, the tests and the benchmarks all come through
    here, so a new part or setting reaches each of them. A given `db` stays open (its
    owner closes it); otherwise the store is opened, schema-checked and closed here.
    """
    instance = instance or instance_name()
    stop = stop or asyncio.Event()
    secrets = reload.Secrets(cfg, keyring)
    keyring = secrets.keyring
    stats = metrics.Metrics()
    notifier = systemd.Notifier.from_env()
    shutdown = Shutdown(cfg.refresh.shutdown_grace_seconds, cfg.server.drain_seconds)
    async with contextlib.AsyncExitStack() as stack:
        if db is None:
            db = await store.connect(cfg.database.url, **cfg.database.store_options())
            stack.push_async_callback(lambda: db.close(shutdown.remaining()))
            await db.check_schema()
        session = await stack.enter_async_context(http_session(cfg.refresh))
        hub = stream.Hub(queue_size=cfg.server.stream_queue_size, stats=stats)
        timeout = cfg.refresh.request_timeout_seconds
        clients = {name: providers.build(
                       p, request_timeout_seconds=timeout,
                       client_secret=functools.partial(secrets.client_secret, name))
                   for name, p in cfg.providers.items()}
        commits = groupcommit.GroupCommit(db)
        stack.push_async_callback(shutdown.bounded, "group commit", commits.close)
        worker = refresher.Refresher(db=db, keyring=keyring, clients=clients, session=session,
                                     hub=hub, stats=stats, settings=cfg.refresh, owner=instance,
                                     commits=commits)
        stack.push_async_callback(shutdown.bounded, "refresh saves", worker.drain)
        refresh_loop = loop.Loop(db=db, worker=worker, hub=hub, stats=stats,
                                 settings=cfg.refresh, instance=instance, stop=stop,
                                 log_retention_seconds=cfg.database.log_retention_seconds,
                                 status=notifier.status,
                                 spending=budget.Budget(db=db, providers=cfg.providers),
                                 idle_after=cfg.idle_after())
        vendor = vending.Vendor(db=db, keyring=keyring, worker=worker, stats=stats,
                                settings=cfg.refresh, providers=cfg.providers)
        stack.push_async_callback(vendor.close)
        deliverer = webhooks.Deliverer(
            db=db, endpoints=cfg.webhooks, stats=stats, instance=instance, stop=stop,
            retention_seconds=cfg.database.log_retention_seconds,
            signing_key=secrets.webhook_key)
        app_tokens = apptokens.AppTokens(db=db, keyring=keyring, clients=clients,
                                         session=session, hub=hub, settings=cfg.refresh,
                                         owner=instance)
        stack.push_async_callback(shutdown.bounded, "app-token saves", app_tokens.drain)
        signer = signing.Signer(db=db, keyring=keyring, providers=cfg.providers,
                                app_tokens=app_tokens, session=session, hub=hub, stats=stats,
                                settings=cfg.refresh, owner=instance)
        stack.push_async_callback(shutdown.bounded, "signature entries", signer.drain)
        ebay_receiver = None
        if cfg.ebay_notifications is not None:
            keys = notifications.PublicKeys(
                url=cfg.ebay_notifications.public_key_url,
                provider=cfg.ebay_notifications.provider, tokens=app_tokens, session=session,
                db=db, hub=hub, timeout_seconds=timeout)
            ebay_receiver = notifications.Receiver(settings=cfg.ebay_notifications, keys=keys,
                                                   db=db, hub=hub)
        readiness = probes.Readiness(db, drain_seconds=cfg.server.drain_seconds)
        connector = connect.Service(db=db, keyring=keyring, cfg=cfg, clients=clients,
                                    session=session, hub=hub)
        app = web.create_app(config=cfg, store=db, hub=hub, refresher=worker, vendor=vendor,
                             loop=refresh_loop, metrics=stats, instance=instance,
                             readiness=readiness, app_tokens=app_tokens,
                             connector=connector, ebay_receiver=ebay_receiver,
                             secrets=secrets, signer=signer)
        yield Parts(cfg=cfg, instance=instance, stop=stop, notifier=notifier, keyring=keyring,
                    secrets=secrets,
                    stats=stats, db=db, session=session, hub=hub, refresher=worker,
                    loop=refresh_loop, vendor=vendor, readiness=readiness, app=app,
                    app_tokens=app_tokens, ebay_receiver=ebay_receiver, connect=connector,
                    deliverer=deliverer, shutdown=shutdown, signer=signer)


@dataclasses.dataclass(frozen=True)
class Listener:
    url: str
    runner: aioweb.AppRunner


@contextlib.asynccontextmanager
async def listening(parts: Parts, host: str, port: int, *,
                    shutdown_timeout: float = 60.0) -> AsyncIterator[Listener]:
    """Serve `parts.app` on host:port until the block ends."""
    runner = aioweb.AppRunner(parts.app, handle_signals=False, access_log=None,
                              shutdown_timeout=shutdown_timeout,
                              logger=parts.app[common.SERVER_LOG])
    await runner.setup()
    try:
        try:
            await aioweb.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port} "
                               f"(server.host/server.port): {exc.strerror}") from None
        bound_host, bound_port = runner.addresses[0][:2]
        parts.readiness.serving()
        yield Listener(url=f"http://{bound_host}:{bound_port}", runner=runner)
        await parts.readiness.linger()  # /readyz says 503 a while before the port closes
    finally:
        await parts.shutdown.bounded("http server", runner.cleanup)


async def run(
    cfg: config.Config, *, stop: asyncio.Event | None = None,
    on_ready: Callable[[str], Awaitable[None] | None] | None = None,
    load: Callable[[], config.Config] | None = None, watch_seconds: float | None = None,
    hard_exit: bool = False,
) -> bool:
    """Run until `stop` is set (or a signal sets it); raise if a side task dies. Returns
    False when the stop had to abandon something (logged). `load` re-reads the
    configuration `cfg` came from (`reload_on_signal`). `hard_exit` (`tokend run`): should
    the teardown overrun its bound anyway, the process ends from a thread."""
    stop = stop or asyncio.Event()
    # Handlers go in first: a supervisor may stop us the moment READY=1 arrives.
    with stop_on_signals(stop):
        async with (assemble(cfg, stop=stop) as parts,
                    reload_on_signal(parts, load, watch_seconds)):
            await _warn_over_quota(parts.db, cfg)
            async with listening(parts, cfg.server.host, cfg.server.port,
                                 shutdown_timeout=TEARDOWN_SECONDS) as listener:
                await _serve(parts, listener.url, on_ready, hard_exit)
    log.info("daemon_stopped", instance=parts.instance, abandoned=parts.shutdown.abandoned)
    return not parts.shutdown.abandoned


async def _serve(
    parts: Parts, url: str,
    on_ready: Callable[[str], Awaitable[None] | None] | None, hard_exit: bool,
) -> None:
    notifier = parts.notifier
    tasks = [asyncio.create_task(parts.loop.run(), name="refresh-loop"),
             asyncio.create_task(parts.deliverer.run(), name="webhook-delivery")]
    # The stream feed runs until cancelled: it is not waited on during the grace.
    feeds = [asyncio.create_task(t, name=n) for n, t in parts.hub.side_tasks(parts.db)]
    interval = systemd.watchdog_interval_seconds()
    if interval is not None:
        healthy = lambda: parts.loop.healthy(clock.now())  # noqa: E731
        tasks.append(asyncio.create_task(
            systemd.run_watchdog(notifier, healthy, interval, parts.stop), name="watchdog"))

    notifier.ready()
    log.info("daemon_ready", url=url, instance=parts.instance, backend=parts.db.backend,
             stream_feed=parts.db.feed_mode,
             providers=sorted(parts.cfg.providers))
    if on_ready is not None:
        result = on_ready(url)
        if asyncio.iscoroutine(result):
            await result

    def stopping() -> None:
        parts.shutdown.begin()
        if hard_exit:
            arm_hard_exit(parts.shutdown.remaining() + HARD_EXIT_MARGIN_SECONDS)
        parts.readiness.drain()
        notifier.stopping()
        log.info("daemon_stopping", instance=parts.instance)

    await _supervise(parts.stop, tasks, feeds, parts.shutdown, stopping)


async def _warn_over_quota(db: store.Store, cfg: config.Config) -> None:
    for p in await quota.project(db, cfg):
        if p.over_quota:
            log.warning("quota_exceeded", provider=p.provider, active_accounts=p.active_accounts,
                        projected_daily_calls=round(p.projected_daily_calls),
                        daily_quota=p.daily_quota)


async def _supervise(stop: asyncio.Event, tasks: list[asyncio.Task], feeds: list[asyncio.Task],
                     shutdown: Shutdown, on_stop: Callable[[], None]) -> None:
    """Wait for a stop (or a side task's death), then let the loop finish within the grace;
    `feeds` run until cancelled, which happens once the others are done.

    Cancellation counts as a stop request: the shutdown still runs, then it is re-raised.
    """
    stopped = asyncio.ensure_future(stop.wait())
    cancelled = False
    try:
        done, _ = await asyncio.wait([stopped, *tasks, *feeds],
                                     return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        cancelled, done = True, set()
    died = [t for t in done if t is not stopped]
    stop.set()
    stopped.cancel()
    on_stop()
    await _finish(tasks, shutdown)
    await _cancel(feeds, shutdown)
    if cancelled:
        raise asyncio.CancelledError
    for task in died:
        error = task.exception() if not task.cancelled() else None
        log.error("side_task_died", task=task.get_name(), error=repr(error))
        raise SideTaskDied(task.get_name()) from error


async def _finish(tasks: list[asyncio.Task], shutdown: Shutdown) -> None:
    """The grace for `tasks` to end on their own; then they are cancelled."""
    _, pending = await asyncio.wait(tasks, timeout=shutdown.grace_seconds)
    if pending:
        log.warning("shutdown_grace_exceeded", tasks=sorted(t.get_name() for t in pending))
        await _cancel(pending, shutdown)


async def _cancel(tasks: Iterable[asyncio.Task], shutdown: Shutdown) -> None:
    """Cancel `tasks` and wait for them until the deadline; one that ignores the
    cancellation (stuck in a cleanup that waits on a dead socket) is abandoned."""
    tasks = set(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=shutdown.remaining())
    if pending:
        shutdown.abandon(*sorted(t.get_name() for t in pending))
