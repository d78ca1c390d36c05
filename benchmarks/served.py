"""The served endpoint over HTTP on loopback: a real `bentoml serve` of the model (started, awaited and stopped
by `training.release.package.Served`, the harness the tests use too), first started with an empty export cache,
then restarted warm; 1 and N concurrent clients, each request one unique text (plus one run of 32-text requests),
every non-2xx or transport error counted as a failure."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.measure import PeakRSS, quantiles, tree_cpu_s
from training.release.package import SOURCE_TARGET, Served, import_into_store


def metric_samples(url: str, prefix: str, timeout: float = 5.0) -> dict[str, float]:
    """Every sample at ``url``/metrics whose line starts with ``prefix``: {name and labels: value}."""
    return {name: float(value) for name, _, value in (line.rpartition(" ") for line in
            httpx.get(url + "/metrics", timeout=timeout).text.splitlines() if line.startswith(prefix))}


def metric_sum(url: str, prefix: str) -> float:
    """The sum of every sample at ``url``/metrics whose line starts with ``prefix`` (name and labels)."""
    return sum(metric_samples(url, prefix).values())


def batch_sizes(url: str, what: str = "requests") -> tuple[float, float]:
    """(sum, count) of the service's ``tweetguard_batch_<what>`` histogram at ``url``/metrics: requests (or
    texts) merged per model call, and model calls."""
    return metric_sum(url, f"tweetguard_batch_{what}_sum"), metric_sum(url, f"tweetguard_batch_{what}_count")


ECHO_TARGET = "benchmarks.echo_service:Echo"


def load_run(url: str, requests: list[list[str]], clients: int, *, server_pid: int | None = None,
             profile: Path | None = None) -> dict:
    """Send `requests` (each a list of texts) to `/classify` from `clients` concurrent `httpx.AsyncClient` workers
    in one event loop, each with its own connection; a non-2xx answer, a wrong result count or a transport error
    is a failure. Also measured: this load generator's CPU (share of one core; it shares the machine with the
    server) and, given `server_pid`, the server's CPU per request."""
    latencies: list[float | None] = [None] * len(requests)
    todo = iter(enumerate(requests))

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            for i, texts in todo:  # one shared iterator: the workers take the next request as they free up
                t0 = time.perf_counter()
                try:
                    r = await client.post("/classify", json={"texts": texts})
                except httpx.HTTPError:
                    continue
                if 200 <= r.status_code < 300 and len(r.json()["results"]) == len(texts):
                    latencies[i] = (time.perf_counter() - t0) * 1e3

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(clients)))

    server0 = tree_cpu_s(server_pid) if server_pid else None
    with Profile(server_pid, profile) as server_profile, Profile(os.getpid(), profile and profile.with_suffix(
            ".generator.txt"), subprocesses=False) as generator_profile:  # not the server, our child
        cpu0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(main())
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ok = [ms for ms in latencies if ms is not None]
    ok_texts = sum(len(req) for req, ms in zip(requests, latencies) if ms is not None)
    out = {"clients": clients, "requests": len(requests), "texts_per_request": len(requests[0]),
           "failures": len(requests) - len(ok), "wall_s": wall, "texts_per_s": ok_texts / wall,
           "requests_per_s": len(ok) / wall, "generator_cpu_share": cpu / wall, **quantiles(ok)}
    if profile is not None:
        out["profile_server"], out["profile_generator"] = server_profile.summary(), generator_profile.summary()
    if server0 is not None:
        out["server_cpu_ms_per_request"] = (tree_cpu_s(server_pid) - server0) * 1e3 / max(len(ok), 1)
        out["server_cpu_share"] = (tree_cpu_s(server_pid) - server0) / wall
    return out


# Where a server's samples are, by the innermost frame we can name (first match wins, in this order).
PROFILE_BUCKETS = (
    ("tokenize / normalize", ("tokenizers", "tokenization_", "preprocess.py", "emoji")),
    ("model forward (onnxruntime / torch)", ("onnxruntime", "torch/", "fastpath.py", "modeling.py")),
    ("our request code (serving/)", ("serving/",)),
    ("BentoML", ("bentoml", "_bentoml_")),
    ("uvicorn / starlette / h11 (HTTP)", ("uvicorn", "starlette", "h11", "httptools")),
    ("pydantic / json", ("pydantic", "json")),
    ("prometheus / opentelemetry", ("prometheus", "opentelemetry")),
    ("asyncio / selectors (event loop, sockets)", ("asyncio", "selectors")),
)


class Profile:
    """`py-spy record` of a process (and its children) while a load runs, summarized into buckets; a no-op when
    py-spy is not installed (`pip install py-spy`)."""

    def __init__(self, pid: int | None, out: Path | None, *, subprocesses: bool = True) -> None:
        self.pid, self.out, self.subprocesses, self.proc = pid, out, subprocesses, None

    def __enter__(self) -> Profile:
        import shutil

        spy = shutil.which("py-spy") or str(Path(os.sys.executable).with_name("py-spy"))
        if self.out is not None and self.pid is not None and Path(spy).exists():
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen([spy, "record", "--pid", str(self.pid), "--rate", "200",
                                          *(["--subprocesses"] if self.subprocesses else []), "--format", "raw", "--output", str(self.out),
                                          "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached before the load starts
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
            self.proc.wait(timeout=60)

    def summary(self) -> dict | None:
        """Share of the active samples (py-spy leaves idle threads out) per bucket of the innermost named frame."""
        if self.proc is None or not self.out.exists():
            return None
        shares: dict[str, float] = {}
        for line in self.out.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            bucket = next((name for f in stack.split(";")[::-1] for name, keys in PROFILE_BUCKETS
                           if any(k in f for k in keys)), "other")
            shares[bucket] = shares.get(bucket, 0.0) + float(count)
        total = sum(shares.values()) or 1.0
        return {"samples": total, "shares": {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
                "file": str(self.out)}


def profiled_runs(url: str, pid: int, texts: list[str], clients: int, work: Path, name: str) -> list[dict]:
    """The 1- and `clients`-client one-text loads again, under py-spy (server and generator apart): where the time
    goes. Their throughput is not reported (py-spy takes CPU too)."""
    out = []
    for c in (1, clients):
        run = load_run(url, [[t] for t in texts], c, server_pid=pid, profile=work / f"profile-{name}-{c}c.txt")
        out.append({"clients": c, "server": run.get("profile_server"), "generator": run.get("profile_generator")})
    return out


def bench_echo(texts: list[str], *, clients: int, work: Path) -> dict:
    """E: the same one-text load against a stock BentoML service with no model (`benchmarks.echo_service`)."""
    server = Served.start(ECHO_TARGET, bentoml_home=work / "bentoml", log_path=work / "echo.log", env={})
    try:
        load_run(server.url, [[t] for t in texts[:50]], 1)  # warm-up
        n1 = min(200, len(texts) // 4)
        return {"runs": [load_run(server.url, [[t] for t in texts[:n1]], 1, server_pid=server.proc.pid),
                         load_run(server.url, [[t] for t in texts[n1:]], clients, server_pid=server.proc.pid)],
                "profiles": profiled_runs(server.url, server.proc.pid, texts[:n1], clients, work, "echo")}
    finally:
        server.stop()


def model_env(tag: str, *, threads: int, path: str, clients: int, work: Path,
              cache_size: int = 0) -> dict[str, str]:
    """The service settings every benchmark server of a model runs with: the model store tag, threads, predict
    path, export cache under `work`, an in-flight limit above `clients`, the exact-repeat cache (off by default:
    headline numbers are on distinct texts)."""
    return {"TWEETGUARD_MODEL_TAG": tag, "TWEETGUARD_TORCH_THREADS": str(threads), "TWEETGUARD_PREDICT_PATH": path,
            "TWEETGUARD_CACHE_DIR": str(work / "cache"), "TWEETGUARD_MAX_INFLIGHT": str(max(64, 2 * clients)),
            "TWEETGUARD_CACHE_SIZE": str(cache_size)}


def bench_served(model_dir: Path, texts: list[str], warmup: list[str], *, threads: int, path: str,
                 clients: int, work: Path | None = None) -> dict:
    """Cold and warm start, RSS of the server's process tree, and the load runs over disjoint slices of texts."""
    work = Path(work or tempfile.mkdtemp(prefix="tgbench-"))
    home = work / "bentoml"
    tag = import_into_store(model_dir, home)
    env = model_env(tag, threads=threads, path=path, clients=clients, work=work)
    target = SOURCE_TARGET
    first = Served.start(target, bentoml_home=home, log_path=work / "serve-cold.log", env=env)
    first.stop()
    server = Served.start(target, bentoml_home=home, log_path=work / "serve.log", env=env)
    out = {"model_tag": tag, "path": path, "threads": threads, "cold_start_empty_cache_s": first.startup_s,
           "cold_start_s": server.startup_s, "runs": []}
    n = len(texts)  # disjoint slices: 1 client one text each, N clients one text each, 1 client 32 per request
    n1, nn = min(200, n // 4), min(800, n // 2)
    rest = texts[n1 + nn:]
    size = min(32, len(rest))
    plan = [([[t] for t in texts[:n1]], 1), ([[t] for t in texts[n1:n1 + nn]], clients),
            ([rest[i:i + size] for i in range(0, len(rest) - size + 1, size)], 1)]
    try:
        with PeakRSS(server.proc.pid) as rss:
            load_run(server.url, [[t] for t in warmup], 1)
            for requests, c in plan:
                if not requests:
                    continue
                before = batch_sizes(server.url)
                run = load_run(server.url, requests, c, server_pid=server.proc.pid)
                after = batch_sizes(server.url)
                calls = after[1] - before[1]
                run["requests_per_model_call"] = (after[0] - before[0]) / calls if calls else float("nan")
                out["runs"].append(run)
        out["profiles"] = profiled_runs(server.url, server.proc.pid, texts[:n1], clients, work, "tweetguard")
        out["peak_rss_mb"] = rss.peak_mb
        out["rss_mb_at_peak"] = sorted(rss.at_peak.values(), reverse=True)
    finally:
        server.stop()
    out["echo"] = bench_echo(texts[:n1 + nn], clients=clients, work=work)
    return out


def repeat_stream(texts: list[str], n: int, repeat_rate: float, seed: int = 0) -> list[str]:
    """`n` texts, each after the first a copy of a uniformly drawn earlier position with probability `repeat_rate`
    (so a text already repeated is likelier to be repeated again, as in a retweet wave), else the next distinct
    text of `texts`."""
    if not 0 <= repeat_rate < 1:
        raise ValueError(f"repeat_rate must be in [0, 1), got {repeat_rate}")
    rng, fresh = random.Random(seed), iter(texts)
    out = [next(fresh)]
    try:
        for _ in range(n - 1):
            out.append(out[rng.randrange(len(out))] if rng.random() < repeat_rate else next(fresh))
    except StopIteration:
        raise ValueError(f"{len(texts)} distinct texts are too few for {n} at repeat rate {repeat_rate}") from None
    return out


def bench_cache(model_dir: Path, texts: list[str], warmup: list[str], *, threads: int, path: str, clients: int,
                repeat_rate: float, work: Path | None = None) -> dict:
    """The exact-repeat cache on a stream with a stated repeat rate: the same one-text-per-request stream (up to
    1,000 requests) from `clients` workers, served with the cache off (`TWEETGUARD_CACHE_SIZE=0`) and then at its
    shipped default; texts/s of each, the ratio, and the hit rate from `/metrics`. Never a headline number."""
    from serving.schemas import ServiceSettings

    work = Path(work or tempfile.mkdtemp(prefix="tgcache-"))
    home = work / "bentoml"
    tag = import_into_store(model_dir, home)
    n = min(1000, len(texts))  # at most n - 1 of them fresh after the first: `texts` always suffice
    stream = repeat_stream(texts, n, repeat_rate)
    default = ServiceSettings.model_fields["cache_size"].default
    out = {"repeat_rate": repeat_rate, "requests": n, "distinct_texts": len(set(stream)), "clients": clients,
           "cache_size": default}
    for name, size in (("cache off", 0), ("cache on (default size)", default)):
        env = model_env(tag, threads=threads, path=path, clients=clients, work=work, cache_size=size)
        server = Served.start(SOURCE_TARGET, bentoml_home=home, log_path=work / f"serve-cache-{size}.log",
                              env=env)
        try:
            load_run(server.url, [[t] for t in warmup], 1)
            hits0 = metric_sum(server.url, 'tweetguard_cache_lookups_total{result="hit"}')
            looks0 = metric_sum(server.url, "tweetguard_cache_lookups_total")
            run = load_run(server.url, [[t] for t in stream], clients, server_pid=server.proc.pid)
            looks = metric_sum(server.url, "tweetguard_cache_lookups_total") - looks0
            hits = metric_sum(server.url, 'tweetguard_cache_lookups_total{result="hit"}') - hits0
            run["hit_rate"] = hits / looks if looks else 0.0
            out[name] = run
        finally:
            server.stop()
    out["speedup"] = out["cache on (default size)"]["texts_per_s"] / out["cache off"]["texts_per_s"]
    return out
