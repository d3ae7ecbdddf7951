"""Hostile load (issue 17): 50 attacking clients and 20 reviewers against one ``labelagent serve`` on loopback.

The attackers send, in turn, a 15.9 MiB JSON body without a valid key, a 155 KB PNG that decodes to 6324 x 6324 RGBA
pixels (a decompression-amplification "bomb" under the pixel limit, with an ingest key), and an ingest call whose
64 image URLs point at a loopback server that never answers. Meanwhile 20 reviewers claim and answer review tasks
and a probe times ``GET /health``. Bounded: ``--seconds`` (default 60) of attack, then everything stops by itself.

Pass: the server's RSS (API process and its children) stays under 1.5 GB, ``/health`` p99 under 100 ms, and every
answer a reviewer got a 200 for is in the database (none lost). ``python -m bench hostile [--seconds N]``;
``--only bomb,slow`` (or ``none``: the reviewers alone, a baseline) sends only those payloads, for profiling. The
machine's load average is printed with the figures: ``/health`` latency on a shared machine is mostly its load.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from PIL import Image
from sqlalchemy import func, select

from service.offline.liveserver import LiveService
from service.store import SqlStore
from service.store.base import review_t
from service.store.db import make_engine
from service.store.migrate import upgrade

ATTACKERS = 50
REVIEWERS = 20
ITEMS = 600
RSS_LIMIT = 1.5 * 2**30
HEALTH_P99_LIMIT = 0.100
POLICY_FILE = Path(__file__).resolve().parent.parent / "policies" / "examples" / "sms_spam.yaml"


def bomb_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (6324, 6324), (10, 20, 30, 255)).save(out, format="PNG", optimize=True)
    return out.getvalue()


class NeverAnswers:
    """A loopback HTTP server whose every request hangs until it is closed (the slow image URLs)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        done = self.done

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                done.wait(600)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.netloc = f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.done.set()
        self.httpd.shutdown()


def rss_of_tree(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (from /proc)."""
    total, todo = 0, [pid]
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


async def attacker(n: int, url: str, ingest: str, payloads: dict[str, bytes], until: float,
                   statuses: dict[int, int]) -> None:
    kinds = list(payloads)
    if not kinds:  # --only none: the reviewers and the probe alone (the baseline)
        return
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        i = n
        while time.monotonic() < until:
            kind = kinds[i % len(kinds)]
            i += 1
            headers = {"Content-Type": "application/json"}
            if kind != "oversized":
                headers["Authorization"] = f"Bearer {ingest}"
            try:
                r = await http.post("/projects/hostile/items", content=payloads[kind], headers=headers)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except httpx.HTTPError:
                statuses[-1] = statuses.get(-1, 0) + 1


async def reviewer(n: int, url: str, key: str, until: float, answered: list[int], errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as http:
        while time.monotonic() < until:
            try:
                claim = await http.post("/projects/hostile/reviews/claim", json={"reviewer": f"r{n}"})
                if claim.status_code == 204:
                    await asyncio.sleep(0.2)
                    continue
                task = claim.json()
                r = await http.post(f"/reviews/{task['task_id']}/submit",
                                    json={"lease_token": task["lease_token"], "label": "ham"})
                if r.status_code == 200:
                    answered.append(task["task_id"])
                else:
                    errors.append(f"submit {r.status_code}")
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)


def health_times(url: str, seconds: float) -> list[float]:
    """``GET /health`` latencies, one probe every 50 ms for ``seconds`` (run in a process of its own)."""
    times: list[float] = []
    until = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            http.get("/health")
            times.append(time.perf_counter() - started)
            time.sleep(0.05)
    return times


async def probe(url: str, until: float, times: list[float], rss: list[int], pid: int) -> None:
    def sample() -> None:  # RSS in a thread of its own: reading /proc must not delay the /health probes
        while time.monotonic() < until:
            rss.append(rss_of_tree(pid))
            time.sleep(0.2)

    # /health from a process of its own: a probe thread in this process would wait for this process's GIL (busy
    # with the 70 attacking and reviewing clients), and measure that instead of the server
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        probed = asyncio.wrap_future(pool.submit(health_times, url, until - time.monotonic()))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        times += await probed
        while sampler.is_alive():
            await asyncio.sleep(0.2)


async def attack(service: LiveService, keys: dict[str, str], seconds: float, slow: str,
                 kinds: list[str]) -> dict[str, Any]:
    bomb = bomb_png()
    import base64
    import json
    payloads = {
        "oversized": b'{"items": [{"external_id": "x", "data": {"text": "' + b"a" * (15_900_000) + b'"}}]}',
        "bomb": json.dumps({"items": [{"external_id": "bomb", "data": {
            "image_base64": base64.b64encode(bomb).decode()}}]}).encode(),
        "slow": json.dumps({"items": [{"external_id": f"s{i}", "data": {"image_url": f"http://{slow}/{i}.png"}}
                                      for i in range(64)]}).encode(),
    }
    payloads = {kind: payloads[kind] for kind in kinds if kind != "none"}
    until = time.monotonic() + seconds
    statuses: dict[int, int] = {}
    answered: list[int] = []
    errors: list[str] = []
    times: list[float] = []
    rss: list[int] = []
    assert service.proc is not None
    await asyncio.gather(
        *(attacker(i, service.url, keys["ingest"], payloads, until, statuses) for i in range(ATTACKERS)),
        *(reviewer(i, service.url, keys["reviewer"], until, answered, errors) for i in range(REVIEWERS)),
        probe(service.url, until, times, rss, service.proc.pid))
    times.sort()
    return {"statuses": statuses, "answered": answered, "errors": errors, "bomb_bytes": len(bomb),
            "health_p50": times[len(times) // 2], "health_p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "health_n": len(times), "rss_max": max(rss)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hostile")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--only", default="oversized,bomb,slow",
                        help="attack payloads to send, comma-separated, or none (a baseline); the test sends all three")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="labelagent-hostile-"))
    url = f"sqlite:///{work / 'hostile.db'}"
    engine = make_engine(url)
    upgrade(engine)
    store = SqlStore(engine)
    keys = {role: store.projects.create_key(name=role, role=role)[0] for role in ("operator", "ingest", "reviewer")}
    slow = NeverAnswers()
    env = {"LABELAGENT_FETCH_ALLOW_HOSTS": f'["{slow.netloc}"]', "LABELAGENT_RATE_LIMIT_PER_SECOND": "0"}
    service = LiveService(url, log=work / "serve.log", workers=1, env=env).start()
    try:
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {keys['operator']}"},
                          timeout=60) as http:
            policy = {**yaml.safe_load(POLICY_FILE.read_text()), "project": "hostile"}
            created = http.post("/projects", json={"name": "hostile", "policy": policy})
            assert created.status_code == 201, created.text
            for start in range(0, ITEMS, 200):
                items = [{"external_id": f"t{i}", "data": {"text": f"message number {i}"}}
                         for i in range(start, start + 200)]
                assert http.post("/projects/hostile/items", json={"items": items}).status_code == 200
        load_before = os.getloadavg()
        result = asyncio.run(attack(service, keys, args.seconds, slow.netloc, args.only.split(",")))
    finally:
        slow.close()
        service.stop(30)
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(review_t)).scalar_one()
    lost = len(result["answered"]) - stored
    ok = result["rss_max"] < RSS_LIMIT and result["health_p99"] < HEALTH_P99_LIMIT and lost <= 0
    load = " ".join(f"{x:.2f}" for x in load_before)
    print(f"attack {args.seconds:.0f}s ({args.only}): {ATTACKERS} attackers, {REVIEWERS} reviewers; statuses "
          f"{result['statuses']}; machine load average {load} before, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after, on {os.cpu_count()} CPUs")
    print(f"bomb PNG {result['bomb_bytes']} bytes; max RSS {result['rss_max'] / 2**20:.0f} MiB "
          f"(limit {RSS_LIMIT / 2**20:.0f})")
    print(f"/health p50 {result['health_p50'] * 1000:.1f} ms, p99 {result['health_p99'] * 1000:.1f} ms over "
          f"{result['health_n']} probes (limit {HEALTH_P99_LIMIT * 1000:.0f} ms)")
    print(f"reviewer answers: {len(result['answered'])} acknowledged, {stored} stored, lost {max(lost, 0)}; "
          f"reviewer errors {len(result['errors'])} {sorted(set(result['errors']))[:5]}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1
