"""An open-model HTTP load generator: requests sent on a fixed schedule, whatever the answers do.

``hey -c 50 -q 20`` holds 1,000 requests per second as 50 workers that each tick 20 times a
second; they start together and keep ticking together, so the server gets a burst of 50
requests at once every 50 ms (bench/serve.py measures and records that pattern).  Traffic from
many independent clients does not arrive like that.  This generator sends request *i* at
``start + i / rate`` — evenly spaced, or at Poisson arrival times with ``--arrivals poisson``
(seeded) — over a pool of keep-alive HTTP/1.1 connections, one request in flight on each; when
every connection is busy it opens another (up to ``--connections``), and past that the request
waits for the first free one.

Latency is counted from the request's **scheduled** time to the moment its whole answer has
been read, so time spent waiting for a free connection, or by a late generator, counts against
the server (no coordinated omission; this is stricter than hey, which starts the clock when it
sends).  The time from sending to the answer is kept too (``service``).

    python bench/loadgen.py URL --rate 1000 --seconds 30 --body FILE [--header 'Name: value']
                            [--connections 256] [--arrivals even|poisson] [--seed 0] --out FILE.json

Writes every request's scheduled offset, latency, service time and status to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need: int | None = None  # bytes of the answer still to come, once the head is read
        self.head_end = 0
        self.status = 0
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(0)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).split(b"\r\n")
            self.status = int(head[0].split(b" ", 2)[1])
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.head_end = end + 4
            self.need = self.head_end + length
        if len(self.buffer) >= self.need:
            del self.buffer[:self.need]
            self.need = None
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(self.status)

    async def request(self, payload: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


async def run(url: str, *, rate: float, seconds: float, body: bytes, headers: list[str], connections: int,
              arrivals: str, seed: int) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers]
    payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    loop = asyncio.get_running_loop()

    n = int(round(rate * seconds))
    if arrivals == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
        schedule = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    else:
        schedule = np.arange(n) / rate
    latency = np.full(n, np.nan)
    service = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int32)

    idle: list[_Connection] = []
    opened = 0
    free = asyncio.Condition()

    async def connect() -> _Connection:
        nonlocal opened
        opened += 1
        _, protocol = await loop.create_connection(_Connection, host, port)
        return protocol

    # open connections before the clock starts (as hey does)
    for _ in range(min(connections, 64)):
        idle.append(await connect())

    async def one(i: int, scheduled: float) -> None:
        connection = None
        while connection is None:
            if idle:
                connection = idle.pop()
                if connection.closed:
                    connection = None
                    continue
            elif opened < connections:
                connection = await connect()
            else:
                async with free:
                    await free.wait()
        sent = time.perf_counter()
        code = await connection.request(payload)
        finished = time.perf_counter()
        latency[i], service[i], status[i] = finished - scheduled, finished - sent, code
        if not connection.closed:
            idle.append(connection)
        async with free:
            free.notify()

    tasks = []
    start = time.perf_counter() + 0.05
    for i, offset in enumerate(schedule.tolist()):
        at = start + offset
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i, at)))
    sending_ended = time.perf_counter()
    done, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    answered = ~np.isnan(latency)
    return {
        "url": url, "rate": rate, "seconds": seconds, "arrivals": arrivals, "seed": seed,
        "requests": n, "answered": int(answered.sum()), "connections_opened": opened,
        "schedule_overrun_s": round(sending_ended - (start + float(schedule[-1])), 4),
        "offset_s": schedule.tolist(), "latency_s": latency.tolist(), "service_s": service.tolist(),
        "status": status.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--arrivals", choices=("even", "poisson"), default="even")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    found = runner(run(args.url, rate=args.rate, seconds=args.seconds, body=args.body.read_bytes(),
                       headers=args.header, connections=args.connections, arrivals=args.arrivals, seed=args.seed))
    args.out.write_text(json.dumps(found))


if __name__ == "__main__":
    main()
