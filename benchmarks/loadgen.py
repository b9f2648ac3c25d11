"""A small HTTP/1.1 load generator (asyncio, keep-alive connections), run as its own process.

    python benchmarks/loadgen.py --port 8000 --mode closed --concurrency 16 --seconds 20 \
        --requests requests.jsonl --out result.json [--key KEY]
    python benchmarks/loadgen.py ... --mode open --rate 200
    python benchmarks/loadgen.py --port 8001 --ports 8001,8002 ...   # several replicas

`requests.jsonl`: one JSON object per line, {"method": "POST", "path": "/v1/recommend", "body":
{...}}, used round-robin. Closed loop: `--concurrency` connections, each sending its next request
as soon as the last is answered (throughput). Open loop: requests start on a fixed schedule at
`--rate` per second whatever the answers do (latency at a given load, coordinated omission
avoided: latency counts from the scheduled start). Writes latencies (ms), statuses and timings.
`--ports`: the connections are spread over these ports in turn, as a round-robin balancer with
keep-alive connections spreads them over replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any


class Connection:
    def __init__(self, host: str, port: int, key: str | None):
        self.host, self.port, self.key = host, port, key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, method: str, path: str, body: bytes | None) -> int:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if self.key:
            head.append(f"Authorization: Bearer {self.key}")
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def closed_loop(
    host: str, ports: list[int], key: str | None, requests: list[dict[str, Any]],
    concurrency: int, seconds: float,
) -> list[tuple[float, float, int]]:  # fmt: skip
    results: list[tuple[float, float, int]] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**12))
    bodies = [_body(r) for r in requests]

    async def worker(port: int) -> None:
        connection = Connection(host, port, key)
        while time.perf_counter() < deadline:
            i = next(counter) % len(requests)
            started = time.perf_counter()
            try:
                status = await connection.send(
                    requests[i]["method"], requests[i]["path"], bodies[i]
                )
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                status = 599
                connection.close()
                connection = Connection(host, port, key)
            results.append((started, time.perf_counter() - started, status))
        connection.close()

    await asyncio.gather(*(worker(ports[j % len(ports)]) for j in range(concurrency)))
    return results


async def open_loop(
    host: str, ports: list[int], key: str | None, requests: list[dict[str, Any]], rate: float,
    seconds: float, connections: int = 64,
) -> list[tuple[float, float, int]]:  # fmt: skip
    results: list[tuple[float, float, int]] = []
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for j in range(connections):
        pool.put_nowait(Connection(host, ports[j % len(ports)], key))
    bodies = [_body(r) for r in requests]
    start = time.perf_counter()
    total = int(rate * seconds)

    async def one(i: int, scheduled: float) -> None:
        connection = await pool.get()
        try:
            r = requests[i % len(requests)]
            status = await connection.send(r["method"], r["path"], bodies[i % len(requests)])
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            status = 599
            connection.close()
            connection = Connection(host, connection.port, key)
        results.append((scheduled, time.perf_counter() - scheduled, status))
        pool.put_nowait(connection)

    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return results


def _body(request: dict[str, Any]) -> bytes | None:
    return None if request.get("body") is None else json.dumps(request["body"]).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ports", help="comma-separated ports to spread connections over")
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--key")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    requests = [json.loads(line) for line in args.requests.read_text().splitlines() if line]
    ports = [int(p) for p in args.ports.split(",")] if args.ports else [args.port]
    if args.mode == "closed":
        results = asyncio.run(
            closed_loop(args.host, ports, args.key, requests, args.concurrency, args.seconds)
        )
    else:
        results = asyncio.run(
            open_loop(args.host, ports, args.key, requests, args.rate, args.seconds)
        )
    args.out.write_text(
        json.dumps(
            {
                "started": [r[0] for r in results],
                "latency_ms": [1000 * r[1] for r in results],
                "status": [r[2] for r in results],
            }
        )
    )


if __name__ == "__main__":
    main()
