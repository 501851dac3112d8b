"""The remote loader bench charges each server's CPU to the source it serves."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import specaware


def _remote_io():
    path = Path(specaware.__file__).parent / "bench" / "remote_io.py"
    spec = importlib.util.spec_from_file_location("bench_remote_io", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_source_is_charged_to_the_server_that_serves_it(monkeypatch):
    remote_io = _remote_io()
    monkeypatch.setattr(remote_io, "SERVER_PIDS", {"http://127.0.0.1:8001/": 11,
                                                   "http://127.0.0.1:8002/": 22})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8002")
    assert remote_io.server_pid("http://127.0.0.1:8001/set/") == 11
    assert remote_io.server_pid("s3://bench/set/") == 22
    assert remote_io.server_pid("/tmp/set") is None
    assert remote_io.process_cpu(None) == 0.0


def test_server_cpu_counts_the_threads_of_the_server_process():
    remote_io = _remote_io()
    busy = ("import threading, time\n"
            "def spin():\n"
            "    end = time.process_time() + 0.3\n"
            "    while time.process_time() < end: pass\n"
            "t = threading.Thread(target=spin); t.start(); t.join()\n"
            "print('done', flush=True); time.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", busy], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"  # the spinning thread has finished
        assert 0.25 <= remote_io.process_cpu(child.pid) < 5.0
    finally:
        child.kill()
        child.wait(10)
