"""A TCP forwarder on 127.0.0.1 in front of PostgreSQL that can play a database restart.

`outage()` cuts every open connection and refuses new ones (nothing listens on the port),
then listens again on the same port: to a client that is exactly what a PostgreSQL
restart looks like, without touching the server the other tests share.

`lose_commit_answer()` lets the next COMMIT through and cuts its connection when the
server answers: the transaction is committed, and the client sees only a lost connection.

`fail_over()` and `partition()` play the faults that refuse nothing: bytes stop passing
while every socket stays open, so neither side hears a thing. After a failover the open
connections stay silent for good (they lead to a primary that is gone) while new ones pass;
a partition silences open and new connections alike until `heal()`, after which what was
held flows on. The server keeps its end of a silenced connection open, with whatever
transaction and row locks it had, exactly as it would across a real partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

PIPE_CHUNK_BYTES = 65536


class PgProxy:
    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self._target = target
        self.target_host = target.hostname or "127.0.0.1"
        self.target_port = target.port or 5432
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._lose_commit_answer = False
        self.commit_answers_lost = 0
        self._flows: set[asyncio.Event] = set()  # one per live connection: set = passing
        self._partitioned = False

    @property
    def url(self) -> str:
        """The target URL with the host and port of this proxy."""
        user = f"{self._target.username}@" if self._target.username else ""
        return self._target._replace(netloc=f"{user}127.0.0.1:{self.port}").geturl()

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (again): on a free port the first time, on the same port afterwards."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every connection at once, the way a crash does."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in tuple(self._writers):
            transport = writer.transport
            transport.abort()
        for task in tuple(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self._writers.clear()

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """Down for the body of the `async with`, up again after it."""
        await self.cut()
        try:
            yield
        finally:
            await self.start()

    def fail_over(self) -> None:
        """Every open connection goes silent for good; new connections pass."""
        for flow in self._flows:
            flow.clear()
        self._flows.clear()  # never healed

    def partition(self) -> None:
        """Open and new connections go silent until `heal()`."""
        self._partitioned = True
        for flow in self._flows:
            flow.clear()

    def heal(self) -> None:
        self._partitioned = False
        for flow in self._flows:
            flow.set()

    def lose_commit_answer(self) -> None:
        """The next COMMIT reaches the server; its answer does not reach the client."""
        self._lose_commit_answer = True

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host,
                                                                 self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # cut while we were connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        committing = asyncio.Event()  # a COMMIT whose answer is to be lost went upstream
        flow = asyncio.Event()
        self._flows.add(flow)
        if not self._partitioned:
            flow.set()
        pipes = [asyncio.create_task(self._pipe(reader, up_writer, committing, flow, up=True)),
                 asyncio.create_task(self._pipe(up_reader, writer, committing, flow, up=False))]
        for task in pipes:
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)
        pipes[0].add_done_callback(lambda _: self._flows.discard(flow))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    committing: asyncio.Event, flow: asyncio.Event, *, up: bool) -> None:
        try:
            while data := await src.read(PIPE_CHUNK_BYTES):
                await flow.wait()
                if up and self._lose_commit_answer and b"COMMIT" in data:
                    self._lose_commit_answer = False
                    committing.set()
                elif not up and committing.is_set():  # the server's answer to that COMMIT
                    self.commit_answers_lost += 1
                    dst.transport.abort()
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            dst.transport.abort()
