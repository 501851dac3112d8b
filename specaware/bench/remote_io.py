"""`specaware bench loader --remote` (issue 22): the streaming loader reading shards from a
loopback HTTP server and a loopback S3 server (moto), against the same shards read locally,
side by side in one run (and the same S3 GetObject requests answered by the HTTP server, to
separate the S3 client's cost from moto's); then `specaware shard` reading a tiled GeoTIFF
over HTTP / S3 against the same file on disk.

Servers run in their own processes (specaware.testing_remote's HTTP server, moto_server) on
127.0.0.1, so they do not share the benchmark's GIL; they are stopped at the end. Loopback has
no latency or bandwidth limit worth the name: the ratios measure what the remote path costs in
CPU (HTTP parsing, tar streaming, copies out of the socket), not what a WAN link would cost.
Target: remote / local >= 0.7 for the train stream at 2 workers.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


TARGET = 0.7


def _wait(url: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError as err:
            if getattr(err, "code", None):  # any HTTP answer means the server is up
                return
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start within {timeout:g} s")


SERVER_PIDS: dict[str, int] = {}  # server url -> pid, for its CPU time


@contextmanager
def serve(command: list[str], url: str):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(url)
        SERVER_PIDS[url] = process.pid
        yield url
    finally:
        SERVER_PIDS.pop(url, None)
        process.terminate()
        process.wait(10)


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` with all its threads, finished ones
    included (Linux /proc; 0.0 for None or elsewhere)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(source: str) -> int | None:
    """The pid of the bench server behind `source` (an http:// URL or, for s3://, the
    AWS_ENDPOINT_URL server), None for a local path."""
    if source.startswith("s3://"):
        source = os.environ.get("AWS_ENDPOINT_URL", "") + "/"
    return next((pid for url, pid in SERVER_PIDS.items() if source.startswith(url)), None)


def serve_http(root: Path):
    """testing_remote.http_server for `root` in its own process (keep-alive, range requests,
    sendfile: python -m http.server copied every shard through 64 KiB reads and writes in
    Python, and that CPU, on the loader's own cores, was counted against the remote side)."""
    port = _free_port()
    return serve([sys.executable, __file__, "serve", str(root), str(port)],
                 f"http://127.0.0.1:{port}/")


def _free_port() -> int:
    from specaware.testing_remote import free_port
    return free_port()


@contextmanager
def s3_endpoint(root: Path, names: list[str]):
    """moto_server on loopback holding s3://bench/<names...> (from `root`); sets the env."""
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    with serve([str(exe), "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}/"):
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
        from specaware.testing_remote import s3_client
        client = s3_client()
        client.create_bucket(Bucket="bench")
        for name in names:
            client.upload_file(str(root / name), "bench", name)
        yield "s3://bench/"


def interleaved_rates(sources: dict[str, str], args, tiles, eval_rate, train_rates,
                      endpoints: dict[str, str] | None = None
                      ) -> dict[str, list[tuple[float, ...]]]:
    """Per source, one (eval-pass tiles/s, steady train-stream tiles/s, train-stream CPU ms per
    tile of the loader's processes, eval-pass CPU ms per tile of the server) per round (the eval
    pass requests every tile exactly once, so the server's share per tile is exact there);
    each round measures every source in turn, so a change of load on the shared machine hits
    all sources of a round alike instead of whichever source was measured while it lasted.
    `endpoints`: AWS_ENDPOINT_URL per s3:// source (the loader's workers read it)."""
    rounds: dict[str, list[tuple[float, ...]]] = {name: [] for name in sources}
    for _ in range(args.repeats):
        for name, source in sources.items():
            if name in (endpoints or {}):
                os.environ["AWS_ENDPOINT_URL"] = endpoints[name]
            pid = server_pid(source)
            start = process_cpu(pid)
            evaluated = eval_rate(source, args.batch_size, args.workers, tiles)
            server_ms = (process_cpu(pid) - start) * 1e3 / tiles
            (train,), loader_ms = train_rates(source, args.batch_size, args.workers, tiles, 1)
            rounds[name].append((evaluated, train, loader_ms, server_ms))
    return rounds


def shard_seconds(scene: str, out: Path, repeats: int) -> float:
    """Median seconds of `shard_scenes` on `scene` (tile 64, in this process)."""
    from specaware.data.shard import shard_scenes
    from specaware.data.tiling import TilingOptions

    times = []
    for i in range(repeats):
        start = time.perf_counter()
        shard_scenes([scene], out / f"run{i}", options=TilingOptions(tile=64), progress=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_scene(path: Path) -> int:
    """A 64-band 512 x 512 float32 tiled GeoTIFF (64 MiB), as a COG would store it."""
    from specaware.testing import sensor_bands, synthetic_cube, write_geotiff
    wl, fwhm, _ = sensor_bands("enmap", 64)
    cube = synthetic_cube(wl, 512, 512, seed=1)
    write_geotiff(path, cube, wavelength=wl, fwhm=fwhm, blocksize=256)
    return path.stat().st_size


def run_remote(args, write_shards, eval_rate, train_rates) -> int:
    tiles, size, per_shard = (48, 128, 8) if args.quick else (160, 128, 16)
    args.repeats = args.repeats or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="bench_remote_") as tmp:
        root = Path(tmp)
        write_shards(root / "set", tiles, size, per_shard, args.dtype)
        names = sorted(p.relative_to(root).as_posix() for p in (root / "set").iterdir())
        print(f"bench_loader --remote: {tiles} tiles of 224 x {size} x {size} {args.dtype} in "
              f"{tiles // per_shard} shards, batch {args.batch_size}, {args.workers} workers, "
              f"{args.repeats} rounds of every source in turn, medians; servers on 127.0.0.1 "
              f"in their own processes")
        eval_rate(root / "set", args.batch_size, args.workers, tiles)  # page cache warm
        s3 = _have_moto()
        with contextlib.ExitStack() as servers:
            http = servers.enter_context(serve_http(root))
            sources, endpoints = {"local": str(root / "set"), "https": http + "set/"}, {}
            if s3:
                sources["s3"] = servers.enter_context(s3_endpoint(root, names)) + "set/"
                endpoints["s3"] = os.environ["AWS_ENDPOINT_URL"]
                # the same GetObject requests answered by the sendfile server (path-style:
                # s3://set/KEY is GET /set/KEY; it ignores the signature): the client's S3
                # path without moto's Python server
                sources["s3-sendfile"], endpoints["s3-sendfile"] = "s3://set/", http.rstrip("/")
            _report_loader(interleaved_rates(sources, args, tiles, eval_rate, train_rates,
                                             endpoints))
        _shard_bench(root, args, s3)
    return 0


def _have_moto() -> bool:
    try:
        import moto  # noqa: F401
    except ImportError:
        print("moto not installed: S3 rows skipped (pip install 'specaware[dev]')")
        return False
    return True


def _report_loader(rounds: dict[str, list[tuple[float, ...]]]) -> None:
    """Median rates, and the median over rounds of each round's remote / local ratio."""
    def median(name, i):
        return statistics.median(r[i] for r in rounds[name])

    print(f"local shards      : eval pass {median('local', 0):7.1f} tiles/s, train stream "
          f"{median('local', 1):7.1f} tiles/s   (reference)")
    labels = {"https": "http://127.0.0.1", "s3": "s3 (moto)", "s3-sendfile": "s3 (sendfile)"}
    for name, label in labels.items():
        if name not in rounds:
            continue
        ratios = [[r[i] / l[i] for r, l in zip(rounds[name], rounds["local"])] for i in (0, 1)]
        evaluated, train = (statistics.median(x) for x in ratios)
        print(f"{label:<18}: eval pass {median(name, 0):7.1f} tiles/s (ratio {evaluated:.2f}), "
              f"train stream {median(name, 1):7.1f} tiles/s (ratio {train:.2f}, rounds "
              f"{', '.join(f'{x:.2f}' for x in ratios[1])}; target >= {TARGET:.2f} "
              f"{'met' if train >= TARGET else 'NOT met'})")
    local_ms = median("local", 2)
    parts = [f"local {local_ms:.1f} ms"]
    for name in labels:
        if name in rounds:
            loader, server = median(name, 2), median(name, 3)
            parts.append(f"{labels[name]} {loader:.1f} ms + server "
                         f"{server:.1f} ms (CPU-bound ratio local/(loader + server) "
                         f"{local_ms / (loader + server):.2f}, without the server "
                         f"{local_ms / loader:.2f})")
    print(f"CPU per tile, train stream (loader's processes; server: eval pass) on "
          f"{os.cpu_count()} cores: " + "; ".join(parts))
    print("(the servers share this machine's cores with the loader: their CPU is part of the "
          "remote cost here, unlike with a real object store; s3 (sendfile) is the specaware "
          "HTTP server answering the same GetObject requests, which isolates the S3 client "
          "path from moto's server)")


def _shard_bench(root: Path, args, s3: bool | None) -> None:
    scene = root / "www" / "scene.tif"
    scene.parent.mkdir()
    size = write_scene(scene)
    repeats = 1 if args.quick else 3
    local = shard_seconds(str(scene), root / "out-local", repeats)
    print(f"shard writing, {size / 2**20:.0f} MiB tiled GeoTIFF (64 bands, 512 x 512, tile 64), "
          f"median of {repeats}:")
    print(f"  local file        : {local:6.2f} s   (reference)")
    with serve_http(root / "www") as url:
        remote = shard_seconds(url + "scene.tif", root / "out-http", repeats)
    print(f"  http://127.0.0.1  : {remote:6.2f} s   speed ratio local/remote "
          f"{local / remote:.2f}")
    if s3:
        with s3_endpoint(root / "www", ["scene.tif"]) as bucket:
            remote = shard_seconds(bucket + "scene.tif", root / "out-s3", repeats)
        print(f"  s3 (moto)         : {remote:6.2f} s   speed ratio local/remote "
              f"{local / remote:.2f}")


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    # a range-capable static server (GDAL's /vsicurl/ needs ranges; http.server has none)
    from specaware.testing_remote import http_server
    with http_server(sys.argv[2], port=int(sys.argv[3])) as server:
        while True:
            time.sleep(3600)
