"""Flower's deployment engine: a SuperLink, one SuperNode per site, and `flwr run` of the
specaware Flower App (`specaware/federated/app`). docs/FEDERATED.md "Deployment" has the
commands for real sites; this module submits a run and, for tests and single-machine trials,
starts a whole federation on 127.0.0.1 (`LocalFederation`) and stops it.

Runtime dependency installation is disabled everywhere: the sites run the specaware that is
installed there, nothing is fetched at run time.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "app"
CONNECTION = "specaware"


def _bin(name: str) -> str:
    """A Flower console script of this Python environment."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"`{name}` not found: install Flower with "
                                "`pip install 'specaware[federated]'`")
    return found


def flower_env(**extra: str) -> dict[str, str]:
    """The environment for Flower's processes: they start `flower-superexec`, `flwr-serverapp`
    and `flwr-clientapp` by name, so this environment's scripts come first on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path, **extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_flwr_home(home: Path, superlink: str, insecure: bool = True,
                    root_certificates: str = "") -> Path:
    """A FLWR_HOME whose config.toml names the SuperLink as connection `specaware` (TLS with
    `root_certificates`, the CA file, unless `insecure`)."""
    import tomli_w
    connection = {"address": superlink, "insecure": insecure}
    if root_certificates:
        connection["root-certificates"] = str(Path(root_certificates).resolve())
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(tomli_w.dumps(
        {"superlink": {"default": CONNECTION, CONNECTION: connection}}))
    return home


def write_run_config(config_json: str, path: Path) -> Path:
    """TOML for `flwr run --run-config`: the resolved config as text (key `config-json`)."""
    import tomli_w
    path.write_text(tomli_w.dumps({"config-json": config_json}))
    return path


def submit(config_json: str, run_dir: Path, superlink: str, timeout: float,
           insecure: bool = True, root_certificates: str = "") -> subprocess.CompletedProcess:
    """`flwr run` of the specaware app on `superlink` (host:port), streaming its log into
    run_dir/flwr_run.log until the run ends or `timeout` seconds pass."""
    if not insecure and not root_certificates:
        raise ValueError("deployment.insecure=false needs deployment.root_certificates (the CA "
                         "file the SuperLink's certificate is signed with)")
    home = write_flwr_home(run_dir / "flwr_home", superlink, insecure, root_certificates)
    run_config = write_run_config(config_json, run_dir / "run_config.toml")
    env = flower_env(FLWR_HOME=str(home))
    with open(run_dir / "flwr_run.log", "w") as log:
        return subprocess.run([_bin("flwr"), "run", str(APP_DIR), CONNECTION, "--run-config",
                               str(run_config), "--stream"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


class LocalFederation:
    """A SuperLink and one SuperNode per data file, all on 127.0.0.1, each in its own process
    group so that stopping also ends the SuperExec and ClientApp processes they spawn.

        with LocalFederation(run_dir, [client0.npz, client1.npz]) as fed:
            fed.run(config_json, timeout=300)
    """

    def __init__(self, run_dir: Path, data_paths: list[Path]):
        self.run_dir, self.data_paths = Path(run_dir), [Path(p) for p in data_paths]
        self.procs: list[subprocess.Popen] = []
        self.port = 0

    def _start(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.run_dir / log_name, "w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=flower_env())
        log.close()
        self.procs.append(proc)
        return proc

    def __enter__(self) -> "LocalFederation":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        try:
            link = self._start([_bin("flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                "--port", str(self.port),
                                "--disable-runtime-dependency-installation"], "superlink.log")
            _wait_for_port(self.port, link, "flower-superlink", 60)
            for i, data in enumerate(self.data_paths):
                node_config = f'partition-id={i} data-path="{data}"'
                self._start([_bin("flower-supernode"), "--insecure", "--superlink",
                             f"127.0.0.1:{self.port}", "--host", "127.0.0.1",
                             "--port", str(free_port()), "--node-config", node_config],
                            f"supernode-{i}.log")
        except BaseException:
            self.stop()
            raise
        return self

    def run(self, config_json: str, timeout: float) -> subprocess.CompletedProcess:
        return submit(config_json, self.run_dir, f"127.0.0.1:{self.port}", timeout)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to every process group started here, SIGKILL after `grace` seconds."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        end = time.monotonic() + grace        # orphans of a group are reaped by init
        while any(_group_alive(p) for p in self.procs) and time.monotonic() < end:
            time.sleep(0.1)
        self.procs.clear()

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(proc: subprocess.Popen) -> bool:
    try:
        os.killpg(proc.pid, 0)
        return True
    except ProcessLookupError:
        return False


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)          # the group this class created for the process
    except ProcessLookupError:
        pass
