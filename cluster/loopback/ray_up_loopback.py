"""A real `ray up` on this machine: our own sshd on 127.0.0.1, a local-provider cluster over SSH to loopback.

    python cluster/loopback/ray_up_loopback.py --space search_spaces/smoke.yaml --folds 1-2

starts an sshd on a free 127.0.0.1 port (throwaway host and user keys, its own config, a temp HOME and TMPDIR
through ``SetEnv``), writes a head-only local-provider cluster YAML, runs ``ray up -y``, submits the search with
``ifdd launch --wait`` through the head's dashboard, then ``ray down -y`` and checks that no raylet of this cluster
is left and that Ray's SSH control sockets are gone. The cluster runs with Ray's token authentication: a token
generated here (0600) goes to the head's ``~/.ray/auth_token`` through ``file_mounts`` (as a real cluster file ships
it, never written in the YAML), and this side's clients (`ray status`, ``ifdd launch``) read the same file through
``RAY_AUTH_TOKEN_PATH``. Everything lives in one temp dir (``--keep`` keeps it).
The recipe and its pitfalls: docs/stack.md P20. ``ray down`` is a machine-wide ``ray stop``: run this alone (the
test holds /tmp/ifdd-ray.lock).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
BASE_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
            "RAY_AUTH_MODE": "token"}
"""Both sides: no telemetry, Ray's token authentication on."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Loopback:
    """The sshd, the cluster YAML and the environment of one loopback cluster, all under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.home, self.tmp = root / "home", root / "tmp"
        self.name = f"ifdd-loopback-{os.getpid()}-{int(time.time())}"
        self.user = getpass.getuser()
        self.ssh_port, self.gcs_port, self.dash_port = free_port(), free_port(), free_port()
        self.key = root / "id_ed25519"
        self.token = root / "auth_token"
        self.sshd: subprocess.Popen | None = None
        self.config = root / "cluster.yaml"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dash_port}"

    @property
    def gcs(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def control_dir(self) -> Path:
        """Where Ray's ssh ControlMaster sockets for this cluster go (ray.autoscaler command_runner)."""
        user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
        return Path(f"/tmp/ray_ssh_{user}") / hashlib.sha256(self.name.encode()).hexdigest()[:10]

    def env(self) -> dict[str, str]:
        """For `ray up/down` and `ifdd launch` here: this venv first, own TMPDIR and HOME, no telemetry, the
        cluster's token through RAY_AUTH_TOKEN_PATH."""
        env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}", TMPDIR=str(self.tmp),
                   HOME=str(self.root / "client-home"), PYTHONUNBUFFERED="1", RAY_AUTH_TOKEN_PATH=str(self.token),
                   **BASE_ENV)
        for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"):
            env.pop(var, None)
        return env

    def write_token(self) -> Path:
        """The cluster's token, generated once (mode 0600); ``file_mounts`` copies it to the head."""
        fd = os.open(self.token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        return self.token

    def start_sshd(self) -> None:
        for d in (self.home, self.tmp, self.root / "client-home"):
            d.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
        host_key = self.root / "ssh_host_ed25519_key"
        for path in (host_key, self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        (self.root / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        cfg = self.root / "sshd_config"
        setenv = " ".join(f"{k}={v}" for k, v in {"HOME": self.home, "TMPDIR": self.tmp, **BASE_ENV}.items())
        cfg.write_text("\n".join([
            f"Port {self.ssh_port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", f"AllowUsers {self.user}",
            f"SetEnv {setenv}", ""]))
        self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=open(self.root / "sshd.log", "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.ssh_port), timeout=1):
                break
            if time.time() > deadline or self.sshd.poll() is not None:
                raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()[-1500:]}")
            time.sleep(0.2)

    def stop_sshd(self) -> None:
        if self.sshd is not None and self.sshd.poll() is None:
            os.killpg(self.sshd.pid, signal.SIGTERM)
            self.sshd.wait(timeout=10)

    def write_config(self, num_cpus: int = 2) -> Path:
        proxy = (f"ssh -p {self.ssh_port} -i {self.key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
                 f"-o UserKnownHostsFile=/dev/null -o BatchMode=yes -W 127.0.0.1:{self.ssh_port} "
                 f"{self.user}@127.0.0.1")
        # every remote command runs as `bash --login -c -i 'source ~/.bashrc; …'`: the venv (and this checkout,
        # so its code wins over an editable install elsewhere) must be on that shell's PATH, `ray down` included
        profile = f"export PATH={VENV_BIN}:$PATH PYTHONPATH={REPO} RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0"
        doc = {
            "cluster_name": self.name,
            "provider": {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []},
            "auth": {"ssh_user": self.user, "ssh_private_key": str(self.key), "ssh_proxy_command": proxy},
            "min_workers": 0, "max_workers": 0, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
            # the head finds it at Ray's default path (its HOME is our temp home)
            "file_mounts": {"~/.ray/auth_token": str(self.token)}, "cluster_synced_files": [],
            "initialization_commands": [],
            "setup_commands": [f"echo '{profile}' >> ~/.bashrc"],
            "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [
                "ray stop",
                f"{profile} && ray start --head --port={self.gcs_port} --node-ip-address=127.0.0.1 "
                f"--num-cpus={num_cpus} --dashboard-host=127.0.0.1 --dashboard-port={self.dash_port} "
                "--disable-usage-stats --autoscaling-config=~/ray_bootstrap_config.yaml"],
            "worker_start_ray_commands": [],
        }
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.config

    def ray(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "ray"), *args], env=self.env(), cwd=self.root, capture_output=True,
                              text=True, timeout=timeout)

    def raylets(self) -> list[str]:
        """Command lines of live raylets started for this cluster (their session dir is under our TMPDIR)."""
        out = subprocess.run(["pgrep", "-af", "raylet"], capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if str(self.tmp) in line]

    def kill_leftovers(self) -> None:
        """SIGKILL, by pid, any process of this cluster's Ray session still running (after a failed `ray down`)."""
        out = subprocess.run(["pgrep", "-f", str(self.tmp)], capture_output=True, text=True).stdout
        for pid in map(int, out.split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close_control_sockets(self) -> list[str]:
        """Ask each ssh ControlMaster of this cluster to exit, remove the dir; returns the sockets it found."""
        found = sorted(str(p) for p in self.control_dir.glob("*")) if self.control_dir.is_dir() else []
        for sock in found:
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "127.0.0.1"], capture_output=True,
                           timeout=20)
        shutil.rmtree(self.control_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.control_dir.parent.rmdir()  # only when no other cluster of this user has sockets there
        return found


def http_status(url: str, token: Path | None = None) -> int:
    """The HTTP status of a GET (with the bearer token from ``token`` when given)."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_dashboard(url: str, token: Path, timeout: float = 60) -> None:
    """Wait until the dashboard answers a request carrying the cluster's token."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            last = http_status(f"{url}/api/version", token)
            if last == 200:
                return
        except OSError as e:
            last = e
        time.sleep(1)
    raise RuntimeError(f"the dashboard at {url} did not accept the cluster's token within {timeout:.0f} s ({last})")


STEADY_NODE = re.compile(r"^\s*1 (?:node_\w+|local\.cluster\.node)\s*$", re.M)


def steady(status: str, cpus: float = 2.0) -> bool:
    """`ray status` shows the settled head-only cluster: one node (listed Active or Idle, depending on when the
    autoscaler last looked), none pending, ``cpus`` CPUs in total."""
    return (len(STEADY_NODE.findall(status)) == 1 and "(no pending nodes)" in status
            and f"/{cpus:.1f} CPU" in status)


def wait_steady_status(lb: Loopback, timeout: float = 120, poll_s: float = 2) -> str:
    """Poll `ray status` until the autoscaler's view has settled (right after `ray up` it may still list the head
    as pending: "allocated unmanaged cloud instance"); returns the settled output, or raises with the last one."""
    deadline = time.time() + timeout
    while True:
        status = lb.ray("status", "--address", lb.gcs, timeout=60)
        text = status.stdout + status.stderr
        if status.returncode == 0 and steady(text):
            return text
        if time.time() > deadline:
            raise RuntimeError(f"`ray status` did not settle on one idle/active node with 2 CPUs, none pending, "
                               f"within {timeout:.0f} s; last output:\n{text[-3000:]}")
        time.sleep(poll_s)


def cycle(lb: Loopback, launch_args: list[str], cwd: Path) -> dict:
    """ray up -> ray status -> ifdd launch --wait -> ray down; returns outputs and timings (seconds)."""
    out: dict = {"timings": {}}
    t = time.time()
    lb.start_sshd()
    lb.write_token()
    lb.write_config()
    up = lb.ray("up", "-y", "--no-config-cache", str(lb.config), timeout=300)
    out["timings"]["up"] = round(time.time() - t, 1)
    out["up"] = up.stdout[-4000:] + up.stderr[-4000:]
    if up.returncode != 0:
        raise RuntimeError(f"ray up failed ({up.returncode}):\n{out['up']}")
    try:
        wait_dashboard(lb.dashboard, lb.token)
        out["unauthenticated"] = {path: http_status(f"{lb.dashboard}{path}") for path in ("/api/version", "/api/jobs/")}
        out["status"] = wait_steady_status(lb)
        t = time.time()
        launch = subprocess.run([str(VENV_BIN / "ifdd"), "launch", "--address", lb.dashboard, "--wait",
                                 *launch_args], cwd=cwd, env=lb.env(), capture_output=True, text=True, timeout=1200)
        out["timings"]["launch"] = round(time.time() - t, 1)
        out["launch_rc"], out["launch"] = launch.returncode, launch.stdout[-6000:] + launch.stderr[-3000:]
    finally:
        t = time.time()
        down = lb.ray("down", "-y", str(lb.config), timeout=180)
        out["timings"]["down"] = round(time.time() - t, 1)
        out["down_rc"], out["down"] = down.returncode, down.stdout[-3000:] + down.stderr[-3000:]
        deadline = time.time() + 30
        while lb.raylets() and time.time() < deadline:
            time.sleep(1)
        out["raylets_left"] = lb.raylets()
        lb.kill_leftovers()
        out["control_sockets"] = lb.close_control_sockets()
        lb.stop_sshd()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True)
    p.add_argument("--folds", default="1-2")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (keys, logs, results)")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ifdd-rayup-", dir="/tmp"))
    lb = Loopback(root)
    storage = root / "shared" / "ray"
    try:
        out = cycle(lb, ["--space", str(Path(args.space).resolve()), "--folds", args.folds, "--working-dir",
                         str(REPO), "--storage", str(storage)], cwd=root)
        print(out["launch"])
        print(json.dumps({"timings_s": out["timings"], "launch_rc": out["launch_rc"],
                          "raylets_left": out["raylets_left"], "results": str(storage.parent / "search")}))
        return 0 if out["launch_rc"] == 0 and not out["raylets_left"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
