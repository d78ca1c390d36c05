"""Soak and overload of the served endpoint: a real `bentoml serve` of a model on loopback, bounded in time and
stopping by itself.

  .venv/bin/python -m benchmarks.soak --model models:/tweetguard@champion [--minutes 10] [--load 0.8]
      [--overload 3] [--overload-s 60] [--out reports/soak]

1. capacity: 16 concurrent clients, one tweet per request, for `--capacity-s` seconds -> C requests/s;
2. soak: a fixed-rate (open-loop) generator at `--load` x C for `--minutes`; every answer is checked against
   its own text's offline scores (the same model through `serving.predictor`, to 1e-5), so a batch mix-up shows
   as a mismatch; per-minute p50/p99, the server's RSS every few seconds;
3. overload: `--overload` x C for `--overload-s` seconds, then back to `--load` x C for `--recover-s` seconds:
   accepted requests' p99, how fast refusals (503 + Retry-After) come, and the time after the burst until the
   p99 of a 1 s window is back within 1.2x the soak's first-minute p99;
4. `--generated` schemathesis requests (10,000) from the served OpenAPI document, as in the test suite.

Every text is distinct within a phase and the exact-repeat cache is off. The generator shares the machine's
cores with the server; its CPU share is reported. Writes soak.json and soak.md to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from benchmarks import measure
from benchmarks.served import load_run, metric_samples
from serving.policies import POLICIES

TOLERANCE = 1e-5


@dataclass
class Outcomes:
    """What one fixed-rate phase got back, request by request."""

    sent_at: list[float] = field(default_factory=list)  # seconds from the phase start
    latency_ms: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)  # 0 = transport error / timeout
    mismatches: int = 0  # 200 answers whose scores differ from the offline ones (or a wrong result count)
    retry_after_missing: int = 0  # 503 answers without Retry-After
    sent_rate: float = 0.0  # requests/s actually sent (below the asked rate when every slot was busy)

    def summary(self) -> dict:
        status = np.array(self.status)
        lat = np.array(self.latency_ms)
        ok, refused = lat[status == 200], lat[status == 503]
        return {"requests": len(status), "sent_per_s": self.sent_rate, "ok": int((status == 200).sum()), "refused_503": int((status == 503).sum()),
                "server_errors_5xx": int(((status >= 500) & (status != 503)).sum()),
                "other_4xx": int(((status >= 400) & (status < 500)).sum()),
                "transport_errors": int((status == 0).sum()), "mismatches": self.mismatches,
                "retry_after_missing": self.retry_after_missing,
                "ok_latency": measure.quantiles(ok.tolist()) if ok.size else {},
                "refusal_latency": measure.quantiles(refused.tolist()) if refused.size else {}}


def check_scores(result: dict, expected: dict[str, float]) -> bool:
    return all(abs(result["scores"][p] - expected[p]) <= TOLERANCE for p in POLICIES)


class RawHTTP:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: one connection, one request at a time; reconnects
    when the server closed it. The fixed-rate generator uses it because at a 3x burst httpx's own CPU per request
    took the cores from the server being measured (the soak's generator CPU is in every report)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        fields = {"Host": f"{self.host}:{self.port}", "Content-Type": "application/json", **headers}
        self.head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body)."""
        for attempt in (0, 1):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                self.writer.write(f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n"
                                  .encode("latin-1") + body)
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                await self.close()  # a kept-alive connection the server closed meanwhile: once more on a new one
                if fresh or attempt or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                    raise
                continue
            try:
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    data = b""
                    while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                        data += (await self.reader.readexactly(size + 2))[:-2]
                    await self.reader.readuntil(b"\r\n")
                else:
                    data = await self.reader.readexactly(int(headers.get("content-length", "0")))
            except BaseException:
                await self.close()  # a half-read answer leaves the connection unusable
                raise
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return status, headers, data
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def fixed_rate(url: str, texts: list[str], expected: dict[str, dict[str, float]], *, rate: float,
                     seconds: float, token: str | None = None, timeout: float = 30.0,
                     out: Outcomes | None = None, offset_s: float = 0.0, max_inflight: int = 512) -> Outcomes:
    """Send one text per request at `rate` requests/s for `seconds` (open loop: a slow answer does not slow the
    sending), texts taken in order and cycled; every answer checked against `expected[text]`."""
    out = out or Outcomes()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # At most `max_inflight` requests open at once, each on a connection of its own (512: a 3x burst whose
    # accepted requests take ~1 s each needs ~400; with 128 the generator, not the server, capped one burst at
    # half its rate). A send that finds every connection busy waits, and the phase reports the rate it really
    # sent. Generator CPU at ~110 requests/s: one shared httpx client with a 128-connection pool 0.90 of a core,
    # one httpx client per connection 0.18, `RawHTTP` 0.05-0.07.
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue[RawHTTP] = asyncio.Queue()

    async def one(client: RawHTTP, text: str, sent: float) -> None:
        t0 = time.perf_counter()
        try:
            status, head, data = await asyncio.wait_for(
                client.post("/classify", json.dumps({"texts": [text]}).encode()), timeout)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            await client.close()
            status, head, data = 0, {}, b""
        finally:
            idle.put_nowait(client)
        out.sent_at.append(offset_s + sent)
        out.latency_ms.append((time.perf_counter() - t0) * 1e3)
        out.status.append(status)
        if status == 200:
            results = json.loads(data)["results"]
            if len(results) != 1 or not check_scores(results[0], expected[text]):
                out.mismatches += 1
        elif status == 503 and "retry-after" not in head:
            out.retry_after_missing += 1

    clients = [RawHTTP(url, headers) for _ in range(max_inflight)]
    for c in clients:
        idle.put_nowait(c)
    try:
        start, tasks, i = loop.time(), [], 0
        while (now := loop.time()) - start < seconds:
            due = start + i / rate
            if due > now:
                await asyncio.sleep(due - now)
            client = await idle.get()
            tasks.append(asyncio.create_task(one(client, texts[i % len(texts)], loop.time() - start)))
            i += 1
        out.sent_rate = i / (loop.time() - start)
        await asyncio.gather(*tasks)
    finally:
        for c in clients:
            await c.close()
    return out


async def _sample_rss(pid: int, every_s: float, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - t0, sum(measure.tree_rss_mb(pid).values())))
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass


def windows(out: Outcomes, width_s: float, seconds: float) -> list[dict]:
    """p50 / p99 of accepted requests per whole window of send time within the phase's `seconds`."""
    sent, lat, status = np.array(out.sent_at), np.array(out.latency_ms), np.array(out.status)
    rows = []
    for k in range(int(seconds // width_s + 1e-9)):
        sel = (sent >= k * width_s) & (sent < (k + 1) * width_s) & (status == 200)
        if sel.any():
            rows.append({"from_s": k * width_s, "n": int(sel.sum()), "p50_ms": float(np.percentile(lat[sel], 50)),
                         "p99_ms": float(np.percentile(lat[sel], 99))})
    return rows


def soak(url: str, pid: int, texts: list[str], expected: dict, *, rate: float, seconds: float,
         token: str | None = None, rss_every_s: float = 5.0) -> dict:
    """The soak phase: fixed rate, every answer checked, RSS sampled."""
    samples: list[tuple[float, float]] = []

    async def main() -> Outcomes:
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(pid, rss_every_s, samples, stop))
        try:
            return await fixed_rate(url, texts, expected, rate=rate, seconds=seconds, token=token)
        finally:
            stop.set()
            await sampler

    cpu0, t0 = time.process_time(), time.perf_counter()
    out = asyncio.run(main())
    wall = time.perf_counter() - t0
    minute = min(60.0, seconds / 4)
    per_window = windows(out, minute, seconds)
    warm = [mb for t, mb in samples if t >= minute] or [mb for _, mb in samples]
    return {"rate": rate, "seconds": seconds, **out.summary(), "window_s": minute, "windows": per_window,
            "p99_last_over_first": per_window[-1]["p99_ms"] / per_window[0]["p99_ms"] if per_window else None,
            "rss_mb": samples, "rss_growth_after_warmup": (warm[-1] / warm[0] - 1) if warm else None,
            "generator_cpu_share": (time.process_time() - cpu0) / wall}


def model_call_buckets(url: str) -> dict[float, float]:
    """The service's `tweetguard_model_call_seconds` histogram from /metrics: {upper bound: cumulative count}."""
    samples = metric_samples(url, "tweetguard_model_call_seconds_bucket{", timeout=30)
    return {float(name.split('le="')[1].split('"')[0]): value for name, value in samples.items()}


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Upper bound of the histogram bucket holding quantile `q` of the observations between two scrapes."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(float("inf"), 0.0)
    return next((le for le, n in delta.items() if n >= q * total), None) if total else None


def overload(url: str, texts: list[str], expected: dict, *, rate: float, burst_rate: float, burst_s: float,
             recover_s: float, baseline_p99_ms: float, token: str | None = None) -> dict:
    """`burst_rate` for `burst_s`, then `rate` for `recover_s`; recovery = first 1 s window after the burst whose
    p99 is within 1.2x `baseline_p99_ms` and stays so."""
    calls: list[dict[float, float]] = [model_call_buckets(url)]

    async def main() -> tuple[Outcomes, Outcomes]:
        burst = await fixed_rate(url, texts, expected, rate=burst_rate, seconds=burst_s, token=token)
        calls.append(await asyncio.to_thread(model_call_buckets, url))
        after = await fixed_rate(url, texts[::-1], expected, rate=rate, seconds=recover_s, token=token)
        return burst, after

    burst, after = asyncio.run(main())
    per_second = windows(after, 1.0, recover_s)
    recovered_at = None
    for k, w in enumerate(per_second):
        if all(x["p99_ms"] <= 1.2 * baseline_p99_ms for x in per_second[k:]):
            recovered_at = w["from_s"]
            break
    return {"burst_rate": burst_rate, "burst_s": burst_s, "burst": burst.summary(), "recover_rate": rate,
            "after": after.summary(), "after_windows_1s": per_second, "baseline_p99_ms": baseline_p99_ms,
            "recovered_within_1_2x_after_s": recovered_at,
            "burst_model_call_s": {f"p{round(q * 100)}_at_most": bucket_quantile(*calls, q) for q in (0.5, 0.99)}}


def generated_requests(url: str, path: str, mode: str, n: int, *, token: str | None = None,
                       timeout_s: float = 5.0) -> list[int]:
    """`n` schemathesis requests built from the served `/docs.json` for POST `path`, `mode` "positive"
    (schema-conforming) or "negative"; each answer must be a documented status within `timeout_s` whose body
    matches its schema and never a 5xx (an AssertionError / schemathesis failure otherwise). The statuses."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              negative_data_rejection]
    operation = schemathesis.openapi.from_url(url + "/docs.json")[path]["POST"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    sent: list[int] = []

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    def run(case):
        response = case.call(headers=headers, timeout=timeout_s)  # a hang is a ReadTimeout: a failure
        sent.append(response.status_code)
        case.validate_response(response, checks=checks)
        assert response.status_code < 500, response.text

    run()
    return sent


def markdown(r: dict) -> str:
    s, o, m = r["soak"], r["overload"], r["machine"]
    lines = [f"# Soak and overload: {r['model']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; load average {m['load_avg'][0]:.2f} at start. Server: "
             f"`bentoml serve` from source, cache off, batch max latency {r['batch_max_latency_ms']} ms. Texts: "
             f"{r['texts']} distinct shared test tweets, each answer checked against its offline scores (1e-5).",
             "", f"Capacity (16 clients, one tweet each, {r['capacity']['wall_s']:.0f} s): "
             f"{r['capacity']['requests_per_s']:.1f} requests/s, p50 {r['capacity']['p50_ms']:.1f} ms.", "",
             f"## Soak: {s['rate']:.1f} requests/s for {s['seconds'] / 60:.1f} min", "",
             f"{s['requests']} requests: {s['ok']} ok, {s['refused_503']} × 503, {s['server_errors_5xx']} × other 5xx, "
             f"{s['transport_errors']} transport errors, {s['mismatches']} mismatched scores. RSS growth after "
             f"warm-up {s['rss_growth_after_warmup']:+.1%}; p99 last window / first "
             f"{s['p99_last_over_first']:.2f}; generator CPU {s['generator_cpu_share']:.2f} cores.", "",
             "| window from s | requests ok | p50 ms | p99 ms |", "|---:|---:|---:|---:|"]
    lines += [f"| {w['from_s']:.0f} | {w['n']} | {w['p50_ms']:.1f} | {w['p99_ms']:.1f} |" for w in s["windows"]]
    b, a = o["burst"], o["after"]
    lines += ["", f"## Overload: {o['burst_rate']:.1f} requests/s for {o['burst_s']:.0f} s, then "
              f"{o['recover_rate']:.1f}", "",
              f"Burst: {b['requests']} requests (sent at {b['sent_per_s']:.1f}/s), {b['ok']} ok (p50 / p99 {b['ok_latency'].get('p50_ms', float('nan')):.0f}"
              f" / {b['ok_latency'].get('p99_ms', float('nan')):.0f} ms), {b['refused_503']} × 503 (answered in p50 / p99 "
              f"{b['refusal_latency'].get('p50_ms', float('nan')):.1f} / "
              f"{b['refusal_latency'].get('p99_ms', float('nan')):.1f} ms), {b['server_errors_5xx']} × other 5xx, "
              f"{b['transport_errors']} transport errors, {b['mismatches']} mismatches. Model calls during the "
              f"burst (from /metrics' histogram, bucket bounds): p50 ≤ {o['burst_model_call_s']['p50_at_most']} s, "
              f"p99 ≤ {o['burst_model_call_s']['p99_at_most']} s.",
              f"After: {a['ok']} ok of {a['requests']}; p99 within 1.2× the soak's first-window p99 "
              f"({o['baseline_p99_ms']:.1f} ms) from {o['recovered_within_1_2x_after_s']} s after the burst."]
    if r.get("generated"):
        g = r["generated"]
        lines += ["", f"## Generated requests (schemathesis): {g['requests']}, every answer documented, none 5xx "
                  f"or a hang; statuses {g['statuses']}"]
    return "\n".join(lines) + "\n"


def _save(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> dict:
    from serving.predictor import Predictor
    from training.tracking.refs import resolve_model_ref
    from training.release.package import Served, import_into_store

    model_dir = resolve_model_ref(args.model)
    pool, _ = measure.shared_test_tweets(args.texts, root=args.data_root, sources_file=args.sources_file, seed=0)
    offline = Predictor.load(model_dir, num_threads=args.threads).predict(pool)
    expected = {t: row["scores"] for t, row in zip(pool, offline)}
    work = Path(tempfile.mkdtemp(prefix="tgsoak-"))
    tag = import_into_store(model_dir, work / "bentoml")
    env = {"TWEETGUARD_MODEL_TAG": tag, "TWEETGUARD_CACHE_SIZE": "0", "TWEETGUARD_MAX_INFLIGHT": "256",
           "TWEETGUARD_TORCH_THREADS": str(args.threads),
           "TWEETGUARD_BATCH_MAX_LATENCY_MS": str(args.batch_max_latency_ms)}
    server = Served.start("serving.service:TweetGuard", bentoml_home=work / "bentoml", log_path=work / "serve.log",
                          env=env)
    report: dict = {"model": str(args.model), "machine": measure.machine(), "texts": len(pool),
                    "batch_max_latency_ms": args.batch_max_latency_ms}
    try:
        load_run(server.url, [[t] for t in pool[:100]], 4)  # warm-up
        n = int(args.capacity_s * 60)
        capacity = load_run(server.url, [[t] for t in pool[100:100 + n]], 16)
        report["capacity"] = capacity
        rate = args.load * capacity["requests_per_s"]
        report["soak"] = soak(server.url, server.proc.pid, pool, expected, rate=rate, seconds=args.minutes * 60)
        _save(report, Path(args.out))  # each phase kept as it ends
        first = report["soak"]["windows"][0]["p99_ms"]
        report["overload"] = overload(server.url, pool, expected, rate=rate,
                                      burst_rate=args.overload * capacity["requests_per_s"],
                                      burst_s=args.overload_s, recover_s=args.recover_s, baseline_p99_ms=first)
        _save(report, Path(args.out))
        if args.generated:
            per = max(1, args.generated // 4)
            statuses = [s for path in ("/classify", "/v1/moderations") for mode in ("positive", "negative")
                        for s in generated_requests(server.url, path, mode, per)]
            report["generated"] = {"requests": len(statuses),
                                   "statuses": {str(k): statuses.count(k) for k in sorted(set(statuses))}}
    finally:
        server.stop()
    return report


def main(argv: list[str] | None = None) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model dir or models:/ reference")
    ap.add_argument("--minutes", type=float, default=10.0, help="soak length")
    ap.add_argument("--load", type=float, default=0.8, help="soak rate as a share of the measured capacity")
    ap.add_argument("--overload", type=float, default=3.0, help="burst rate as a multiple of capacity")
    ap.add_argument("--overload-s", type=float, default=60.0)
    ap.add_argument("--recover-s", type=float, default=20.0)
    ap.add_argument("--capacity-s", type=float, default=20.0, help="~seconds of the capacity run (at ~60 req/s)")
    ap.add_argument("--batch-max-latency-ms", type=int, default=1000)
    ap.add_argument("--generated", type=int, default=10_000, help="schemathesis requests after the load phases "
                    "(split over both endpoints, conforming and not); 0 = none")
    ap.add_argument("--texts", type=int, default=6000, help="distinct tweets in the pool (cycled)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--data-root", default=os.environ.get("TWEETGUARD_DATA_ROOT", "../shared/datasets"))
    ap.add_argument("--sources-file", default="data/sources.yaml")
    ap.add_argument("--out", default="reports/soak")
    args = ap.parse_args(argv)
    report = run(args)
    measure.write_report(args.out, "soak", report, markdown(report))
    return report


if __name__ == "__main__":
    main()
