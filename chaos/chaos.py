#!/usr/bin/env python3
"""scripts/chaos: randomized, black-box failure injection against the real binary.

Each run: a fresh database, `migrate`, `seed-demo`, `admin add`, two `serve`
replicas on loopback against a misbehaving HTTP Identity Graph
(chaos/graph-server.mjs), one real job started through the API, and then, at
random moments until it completes: kill -9 of a replica (then a restart),
SIGTERM of a replica (then a restart), stop + start through the API, and
pg_terminate_backend on every app connection. When the job completes, the
replicas are shut down and chaos/reconcile.sql compares what the graph server
acknowledged, and the unresolved failure rows, with the source users and the
job row's counters. See docs/chaos.md.

Every anomaly the driver sees is a mismatch, not a note: the job ending
`failed` mid-run, a replica exiting on its own, a SIGTERM exit over 5 s (or
one that needs a kill), a stop over 2.5 s, overlapping writes for one user,
open run rows or negative run counters after shutdown, and an unresolved
failure whose user's last answer from the graph was a 2xx (or who was never
sent). A run counts only if at least one event was injected while the job
was `running`; a run that finished before that is void and replaced by
another one, with the next seed.

Only the standard library; called by scripts/chaos, which finds the binary.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_source import LiveSource  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
JOB_KEY = "chaos"
ADMIN_EMAIL = "chaos-operator@example.com"
TOKEN = "chaos-token"
DB_PREFIX = "igb_chaos_"
API = "/api/identity-graph-backfill/"

# The app's timing under chaos (docs/configuration.md).
LEASE_TTL_MS = 3000
WATCHDOG_INTERVAL_MS = 1000
GRAPH_TIMEOUT_MS = 500

WORDS = (
    "amber anchor apricot basil beacon birch bramble breeze canyon cedar cobalt comet copper "
    "coral cricket dune ember falcon fennel fjord garnet glacier granite harbor hazel heron "
    "indigo island jasper juniper kelp kestrel lagoon lantern lichen magnet maple marble meadow "
    "mesa nectar nutmeg oasis obsidian orchid otter pebble pepper pine plume quartz quill raven "
    "reef saffron sage sequoia sierra slate sparrow spruce summit tamarind thistle thunder "
    "timber topaz tundra umber valley velvet walnut willow yarrow zephyr"
).split()


class ChaosError(Exception):
    """Set-up trouble that makes a run impossible (not a finding about the app)."""


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- Postgres


def db_url(base: str, name: str) -> str:
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def psql(url: str, sql: str, timeout: float = 60) -> str:
    result = subprocess.run(
        ["psql", url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise ChaosError(f"psql failed: {result.stderr.strip()} (SQL: {sql[:120]})")
    return result.stdout.strip()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_stale_databases(admin_url: str) -> None:
    """Drops databases left by an earlier chaos process that no longer exists."""
    names = psql(admin_url, f"SELECT datname FROM pg_database WHERE datname LIKE '{DB_PREFIX}%'")
    for name in filter(None, names.splitlines()):
        match = re.match(rf"^{DB_PREFIX}(\d+)_", name)
        if match and not pid_alive(int(match.group(1))):
            psql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child in its own session, so a Ctrl-C reaches only this script, which cleans up."""

    registry: list["Proc"] = []

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen | None = None
        Proc.registry.append(self)

    def start(self, stdout=None) -> None:
        logfile = open(self.log_path, "ab")
        logfile.write(f"\n=== {time.strftime('%H:%M:%S')} start {self.name}\n".encode())
        logfile.flush()
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else logfile,
            stderr=logfile,
            start_new_session=True,
        )
        logfile.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait()

    def terminate(self, grace: float) -> float | None:
        """SIGTERM, then SIGKILL after `grace` s. Returns the exit time, or None if it had to be killed."""
        if not self.alive():
            return 0.0
        started = time.monotonic()
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
            return time.monotonic() - started
        except subprocess.TimeoutExpired:
            self.kill9()
            return None


def cleanup_processes() -> None:
    for proc in Proc.registry:
        try:
            proc.kill9()
        except Exception:
            pass
    Proc.registry.clear()


# ---------------------------------------------------------------- HTTP


def http_request(port: int, method: str, path: str, body=None, headers=None, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if payload is not None:
            hdrs["content-type"] = "application/json"
        conn.request(method, path, body=payload, headers=hdrs)
        response = conn.getresponse()
        data = response.read()
        return response.status, data, response.getheader("set-cookie") or ""
    finally:
        conn.close()


class Replica(Proc):
    def __init__(self, name: str, bin_path: str, env: dict, log_path: Path):
        super().__init__(name, [bin_path, "serve"], env, log_path)
        self.port = free_port()

    def start(self, stdout=None) -> None:
        self.env = dict(self.env, LEPTOS_SITE_ADDR=f"127.0.0.1:{self.port}")
        super().start()

    def wait_healthy(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                status, _, _ = http_request(self.port, "GET", "/healthz", timeout=2)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def launch(self, notes: list[str]) -> None:
        """Starts (or restarts) the replica and waits until it answers."""
        for attempt in range(3):
            self.start()
            if self.wait_healthy():
                return
            self.kill9()
            # The port may have been taken meanwhile: take another one.
            self.port = free_port()
            notes.append(f"replica {self.name} did not come up (attempt {attempt + 1}); see {self.log_path}")
        raise ChaosError(f"replica {self.name} does not start; see {self.log_path}")


class ApiError(Exception):
    pass


class Client:
    """Signs in once; calls whichever replica is up; retries connection errors and 5xx."""

    def __init__(self, replicas: list[Replica], password: str, rng: random.Random):
        self.replicas = replicas
        self.password = password
        self.rng = rng
        self.cookie = ""

    def _live(self) -> list[Replica]:
        live = [r for r in self.replicas if r.alive()]
        self.rng.shuffle(live)
        return live

    def login(self, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            for replica in self._live():
                try:
                    status, data, cookie = http_request(
                        replica.port, "POST", API + "login",
                        {"email": ADMIN_EMAIL, "password": self.password},
                    )
                except OSError as error:
                    last = str(error)
                    continue
                match = re.search(r"igb_session=([^;]+)", cookie)
                if status == 200 and match:
                    self.cookie = match.group(1)
                    return
                last = f"HTTP {status}: {data[:200]!r}"
                if status < 500 and status != 429:
                    raise ApiError(f"login refused: {last}")
            time.sleep(0.3)
        raise ApiError(f"login failed: {last}")

    def call(self, endpoint: str, body: dict, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        last = "no replica is up"
        while time.monotonic() < deadline:
            for replica in self._live():
                try:
                    status, data, _ = http_request(
                        replica.port, "POST", API + endpoint, body,
                        headers={"cookie": f"igb_session={self.cookie}"},
                    )
                except OSError as error:
                    last = f"{replica.name}: {error}"
                    continue
                if status == 200:
                    return json.loads(data)
                last = f"{replica.name}: HTTP {status}: {data[:300].decode(errors='replace')}"
                if status == 401:
                    self.login(deadline)
                    continue
                if status < 500:
                    raise ApiError(f"{endpoint}: {last}")
            time.sleep(0.2)
        raise ApiError(f"{endpoint}: {last}")


# ---------------------------------------------------------------- one run


@dataclass
class RunResult:
    number: int
    seed: int
    users: int
    events: list[str] = field(default_factory=list)
    status: str = "?"
    lost: int = 0
    mismatches: list[str] = field(default_factory=list)
    stuck: bool = False
    # Events injected while the job was `running` (a run needs one to count).
    while_running: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None


class Run:
    def __init__(self, number: int, seed: int, args, base_url: str, logdir: Path):
        self.n = number
        self.seed = seed
        self.args = args
        self.rng = random.Random(seed)
        self.db = f"{DB_PREFIX}{os.getpid()}_{number}"
        self.admin_url = db_url(base_url, "postgres")
        self.url = db_url(base_url, self.db)
        self.dir = logdir / f"run-{number:02d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.result = RunResult(number, seed, args.users)
        self.events_log = open(self.dir / "events.log", "a")
        self.t0 = time.monotonic()
        self.graph: Proc | None = None
        self.graph_port = 0
        self.replicas: list[Replica] = []
        self.client: Client | None = None
        self.start_body: dict = {}
        self.created_db = False

    # -- bookkeeping

    def event(self, text: str) -> None:
        self.events_log.write(f"{time.monotonic() - self.t0:8.2f}s  {text}\n")
        self.events_log.flush()

    def note(self, text: str) -> None:
        self.result.notes.append(text)
        self.event("NOTE " + text)

    def anomaly(self, text: str) -> None:
        """Something the app must never do: a mismatch, so the run fails."""
        self.result.mismatches.append(text)

    # -- set-up

    def binary(self, *argv: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [self.args.bin, *argv], input=stdin, capture_output=True, text=True,
            env=self.env(), cwd=ROOT, timeout=300,
        )
        if result.returncode != 0:
            raise ChaosError(f"`{' '.join(argv)}` failed: {result.stderr.strip()[-500:]}")
        return result.stdout.strip()

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IDENTITY_GRAPH", "LEPTOS_", "SESSION_", "LOGIN_"))}
        env.update(
            DATABASE_URL=self.url,
            RUST_LOG=os.environ.get("CHAOS_RUST_LOG", "info,sqlx=warn,tower_http=warn"),
            RUST_BACKTRACE="0",
            LEPTOS_SITE_ROOT=str(ROOT / "target" / "site"),
            IDENTITY_GRAPH_SINK="http",
            IDENTITY_GRAPH_URL=f"http://127.0.0.1:{self.graph_port}",
            IDENTITY_GRAPH_TOKEN=TOKEN,
            IDENTITY_GRAPH_TIMEOUT_MS=str(GRAPH_TIMEOUT_MS),
            IDENTITY_GRAPH_BACKFILL_ADMINS=ADMIN_EMAIL,
            IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS=str(LEASE_TTL_MS),
            IDENTITY_GRAPH_BACKFILL_WATCHDOG_INTERVAL_MS=str(WATCHDOG_INTERVAL_MS),
        )
        return env

    def start_graph(self) -> None:
        self.graph = Proc(
            "graph", ["node", str(HERE / "graph-server.mjs"), "--seed", str(self.seed),
                      "--token", TOKEN, "--mix", self.args.mix],
            dict(os.environ), self.dir / "graph.log",
        )
        self.graph.start(stdout=subprocess.PIPE)
        line = self.graph.popen.stdout.readline().decode()
        match = re.match(r"listening (\d+)", line)
        if not match:
            raise ChaosError(f"the graph server did not start: {line!r}; see {self.graph.log_path}")
        self.graph_port = int(match.group(1))

    def graph_get(self, path: str) -> bytes:
        status, data, _ = http_request(self.graph_port, "GET", path, timeout=30)
        if status != 200:
            raise ChaosError(f"graph server {path}: HTTP {status}")
        return data

    def set_up(self) -> None:
        psql(self.admin_url, f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        psql(self.admin_url, f'CREATE DATABASE "{self.db}"')
        self.created_db = True
        self.start_graph()
        self.binary("migrate")
        self.binary("seed-demo", "--users", str(self.args.users))
        # A long random passphrase: four words and digits (the password policy
        # wants 12+ characters, not the email's local part, zxcvbn score >= 3).
        pick = secrets.SystemRandom()
        self.password = "-".join(pick.sample(WORDS, 4)) + f"-{pick.randrange(1000, 10000)}"
        self.binary("admin", "add", ADMIN_EMAIL, stdin=self.password)
        self.replicas = [
            Replica(name, self.args.bin, self.env(), self.dir / f"replica-{name}.log")
            for name in ("a", "b")
        ]
        for replica in self.replicas:
            replica.launch(self.result.notes)
        # Its own generator: how many API calls a run makes depends on timing,
        # and must not shift the event choices a seed replays.
        self.client = Client(self.replicas, self.password, random.Random(self.seed + 7919))
        self.client.login(time.monotonic() + 30)

    # -- the job

    def job(self) -> dict:
        """The job through the API; straight from the table if no replica answers."""
        try:
            return self.client.call("job", {"job_key": JOB_KEY}, timeout=5)["job"]
        except ApiError as error:
            self.event(f"job via API failed ({error}); reading the row")
            row = psql(
                self.url,
                "SELECT row_to_json(j) FROM (SELECT status, pause_reason, cursor, processed, failed, skipped, "
                f"last_error, stop_requested FROM identity_graph_backfill_jobs WHERE job_key = '{JOB_KEY}') j",
                timeout=20,
            )
            return json.loads(row) if row else {"status": "missing"}

    def start_job(self, why: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            answer = self.client.call("start", self.start_body)
            self.event(f"start ({why}): started={answer['started']} status={answer['job']['status']}")
            if answer["started"] or answer["job"]["status"] in ("running",):
                return
            if time.monotonic() > deadline:
                raise ApiError(f"start keeps answering started=false: {answer['job']['status']}")
            time.sleep(0.3)

    def wait_status(self, wanted: set[str], timeout: float) -> tuple[str, float]:
        started = time.monotonic()
        status = "?"
        while time.monotonic() - started < timeout:
            status = self.job()["status"]
            if status in wanted:
                break
            time.sleep(0.1)
        return status, time.monotonic() - started

    # -- chaos

    def pick_event(self) -> str:
        kinds = ["kill9", "kill9", "kill9", "sigterm", "sigterm", "stop-start", "stop-start",
                 "pg-terminate", "pg-terminate", "dry-run", "freeze"]
        if self.args.only:
            kinds = [k for k in kinds if k in self.args.only]
        return self.rng.choice(kinds)

    def inject(self) -> None:
        kind = self.pick_event()
        if kind in ("kill9", "sigterm"):
            roll = self.rng.random()
            targets = self.replicas if (kind == "kill9" and roll < 0.15) else [self.rng.choice(self.replicas)]
            label = f"{kind} {'+'.join(r.name for r in targets)}"
            for replica in targets:
                if kind == "kill9":
                    replica.kill9()
                else:
                    exited = replica.terminate(grace=15)
                    if exited is None:
                        self.anomaly(f"SIGTERM: replica {replica.name} did not exit within 15 s; killed")
                    else:
                        label += f" (exit {exited:.1f}s)"
                        if exited > 5:
                            self.anomaly(f"SIGTERM: replica {replica.name} took {exited:.1f}s to exit (> 5 s)")
            self.event(label)
            time.sleep(self.rng.uniform(0, 2))
            for replica in targets:
                replica.launch(self.result.notes)
            self.event(f"restarted {'+'.join(r.name for r in targets)}")
        elif kind == "freeze":
            # A stalled process (a VM pause, a stuck disk): SIGSTOP past the
            # lease TTL, then SIGCONT. The other replica's watchdog takes the
            # job over meanwhile; the frozen run must then write nothing more.
            # Both at once, a third of the time: then the frozen owner's own
            # watchdog may be the one that finds its lease expired.
            targets = self.replicas if self.rng.random() < 0.33 else [self.rng.choice(self.replicas)]
            pause = self.rng.uniform(LEASE_TTL_MS / 1000 + 0.5, 2 * LEASE_TTL_MS / 1000 + 1)
            for replica in targets:
                os.kill(replica.popen.pid, signal.SIGSTOP)
            try:
                time.sleep(pause)
            finally:
                for replica in targets:
                    os.kill(replica.popen.pid, signal.SIGCONT)
            self.event(f"freeze {'+'.join(r.name for r in targets)} for {pause:.1f}s (SIGSTOP, SIGCONT)")
        elif kind == "dry-run":
            # An operator's rehearsal: stop the job, dry-run the same key (a dry
            # run is recorded under `<key>:dry-run` and never touches the real
            # job), stop the rehearsal if it is still going, start the job again.
            self.client.call("stop", {"job_key": JOB_KEY})
            status, took = self.wait_status({"stopped", "completed", "failed"}, timeout=30)
            if status != "stopped" and status != "completed":
                self.anomaly(f"stop before the dry run: job was {status} {took:.0f}s after the stop request")
            elif status == "stopped" and took > 2.5:
                self.anomaly(f"stop before the dry run took {took:.1f}s to reach `stopped` (> 2.5 s)")
            answer = self.client.call("start", {"job_key": JOB_KEY, "dry_run": True, "sleep_ms": 0,
                                                "batch_size": self.start_body["batch_size"]})
            dry_key = answer["job"]["job_key"]
            time.sleep(self.rng.uniform(0.5, 3.0))
            dry = self.client.call("job", {"job_key": dry_key})["job"]
            if dry["status"] in ("running", "stopping", "paused"):
                try:
                    self.client.call("stop", {"job_key": dry_key})
                except ApiError as error:
                    self.anomaly(f"could not stop the dry run {dry_key!r}: {error}")
                deadline = time.monotonic() + 60
                while dry["status"] not in ("stopped", "completed", "failed") and time.monotonic() < deadline:
                    time.sleep(0.2)
                    dry = self.client.call("job", {"job_key": dry_key})["job"]
            self.event(
                f"dry run on {dry_key} (started={answer['started']}): {dry['status']}, "
                f"cursor {dry['cursor']}, skipped {dry['skipped']}"
            )
            if dry_key == JOB_KEY:
                self.anomaly(f"a dry run of key {JOB_KEY!r} was recorded on the real job's row "
                          f"(cursor {dry['cursor']}, {dry['skipped']} skipped)")
            if status != "completed":
                self.start_job("after the dry run")
        elif kind == "stop-start":
            answer = self.client.call("stop", {"job_key": JOB_KEY})
            before = answer["job"]["status"]
            status, took = self.wait_status({"stopped", "completed", "failed"}, timeout=30)
            label = f"stop ({before} -> {status} in {took:.1f}s)"
            if status not in ("stopped", "completed"):
                self.anomaly(f"stop: job was {status} {took:.0f}s after the stop request")
            elif status == "stopped" and took > 2.5:
                self.anomaly(f"stop took {took:.1f}s to reach `stopped` (> 2.5 s; the contract says about 2 s)")
            self.event(label)
            time.sleep(self.rng.uniform(0, 1.5))
            if status != "completed":
                self.start_job("after stop")
        else:
            # Every app connection, again and again (every 20 ms) for a random
            # burst of up to 2 s: queries in flight, checkpoints, heartbeats
            # and freshly opened pool connections all die.
            burst = self.rng.uniform(0.1, 2.0)
            result = subprocess.run(
                ["psql", self.admin_url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c",
                 "DO $$ DECLARE total bigint := 0; n bigint; BEGIN "
                 f"WHILE clock_timestamp() < now() + interval '{burst:.2f} seconds' LOOP "
                 "SELECT count(pg_terminate_backend(pid)) INTO n FROM pg_stat_activity "
                 f"WHERE datname = '{self.db}' AND pid <> pg_backend_pid(); "
                 "total := total + n; PERFORM pg_sleep(0.02); END LOOP; "
                 "RAISE NOTICE 'terminated %', total; END $$"],
                capture_output=True, text=True, timeout=30,
            )
            match = re.search(r"terminated (\d+)", result.stderr)
            if result.returncode != 0 or not match:
                raise ChaosError(f"pg_terminate_backend loop failed: {result.stderr.strip()}")
            label = f"pg-terminate for {burst:.1f}s ({match.group(1)} connections)"
            self.event(label)
        self.result.events.append(kind)

    def drive(self) -> None:
        args = self.args
        rng = self.rng
        self.start_body = {
            "job_key": JOB_KEY,
            "batch_size": rng.choice([200, 500, 500, 1000]),
            "sleep_ms": 0,
            "concurrency": rng.choice([16, 32, 32, 64]),
            "max_consecutive_failures": 10000,
        }
        if rng.random() < 0.25:
            # A short runtime cap: the run also pauses on `max-runtime` and the watchdog resumes it.
            self.start_body["max_runtime_ms"] = rng.randint(5000, 15000)
        self.event(f"options {json.dumps(self.start_body)}")
        self.start_job("first start")
        live = None
        if args.live_source:
            live = LiveSource(self.url, args.users + 1, random.Random(self.seed + 104729), self.event)
            live.start()
        budget = rng.randint(args.min_events, args.max_events)
        deadline = time.monotonic() + args.timeout
        next_event = time.monotonic() + rng.uniform(0.3, 2.0)
        while True:
            for replica in self.replicas:
                if not replica.alive():
                    code = replica.popen.returncode if replica.popen else None
                    self.anomaly(f"replica {replica.name} exited on its own (code {code}); restarted")
                    replica.launch(self.result.notes)
            job = self.job()
            status = job["status"]
            if status == "completed":
                break
            if time.monotonic() > deadline:
                self.result.stuck = True
                self.note(
                    f"STUCK: not completed after {args.timeout:.0f}s: status {status} "
                    f"({job.get('pause_reason')}), cursor {job.get('cursor')}, "
                    f"last_error {job.get('last_error')!r}"
                )
                break
            if status in ("stopped", "failed"):
                if status == "failed":
                    self.anomaly(f"job ended `failed` mid-run (restarted through the API): {job.get('last_error')!r}")
                else:
                    self.anomaly("job was `stopped` without a pending chaos stop (restarted)")
                self.start_job(f"after {status}")
                continue
            if status == "paused" and job.get("pause_reason") not in (
                "interrupted", "max-runtime", "consecutive-failures"
            ):
                self.anomaly(f"paused with reason {job.get('pause_reason')!r}: restarted through the API")
                self.start_job("after a non-resumable pause")
                continue
            if len(self.result.events) < budget and time.monotonic() >= next_event:
                if status == "running":
                    self.result.while_running += 1
                self.inject()
                next_event = time.monotonic() + rng.uniform(args.min_gap, args.max_gap)
                continue
            time.sleep(0.25)
        if live is not None:
            # Users kept signing up, some committing late below the cursor:
            # commit every held one, then the job's next run must catch them up.
            live.stop()
            self.note(live.summary())
            if live.errors:
                first = live.errors[0].splitlines()[0]
                self.note(f"live source: {len(live.errors)} inserts or commits were cut off "
                          f"(a pg-terminate ends their sessions; they never committed), e.g. {first}")
            if not self.result.stuck:
                try:
                    coverage = self.client.call("job", {"job_key": JOB_KEY}, timeout=10).get("coverage") or {}
                    self.note(f"live source: {coverage.get('late_arrivals', '?')} users arrived below "
                              f"the cursor after the scan passed them")
                except ApiError as error:
                    self.event(f"coverage before the final run: {error}")
                self.start_job("final catch-up after the live source stopped")
                status, took = self.wait_status({"completed", "failed", "stopped"}, args.timeout)
                self.event(f"final catch-up run: {status} after {took:.1f}s")
                if status != "completed":
                    self.result.stuck = True
                    self.note(f"STUCK: the final catch-up run ended {status}")
                job = self.job()
        self.result.status = "stuck" if self.result.stuck else "completed"
        if not self.result.stuck:
            # A second look: nothing may write the row after `completed`.
            time.sleep(2.5)
            again = self.job()
            keys = ("status", "cursor", "processed", "failed", "skipped")
            if any(again.get(k) != job.get(k) for k in keys):
                self.result.mismatches.append(
                    "the job row changed after `completed`: "
                    + ", ".join(f"{k} {job.get(k)} -> {again.get(k)}" for k in keys if again.get(k) != job.get(k))
                )

    # -- reconciliation

    def shut_down_replicas(self) -> None:
        for replica in self.replicas:
            exited = replica.terminate(grace=15)
            if exited is None:
                self.anomaly(f"final SIGTERM: replica {replica.name} did not exit within 15 s; killed")
            elif exited > 5:
                self.anomaly(f"final SIGTERM: replica {replica.name} took {exited:.1f}s to exit (> 5 s)")

    def reconcile(self) -> None:
        acked_path = self.dir / "acked.txt"
        acked_path.write_bytes(self.graph_get("/acked"))
        last_answers = self.graph_get("/last")
        (self.dir / "last-answers.txt").write_bytes(last_answers)
        last = dict(line.split(" ", 1) for line in last_answers.decode().splitlines() if line)
        stats = json.loads(self.graph_get("/stats"))
        (self.dir / "graph-stats.json").write_text(json.dumps(stats, indent=1))
        self.graph.terminate(grace=5)
        with open(acked_path, "rb") as acked:
            result = subprocess.run(
                ["psql", self.url, "-X", "-At", "-v", f"job_key={JOB_KEY}", "-f", str(HERE / "reconcile.sql")],
                stdin=acked, capture_output=True, timeout=300,
            )
        if result.returncode != 0:
            raise ChaosError(f"reconciliation failed: {result.stderr.decode().strip()}")
        r = json.loads(result.stdout.decode().strip().splitlines()[-1])
        (self.dir / "reconcile.json").write_text(json.dumps(r, indent=1))
        unresolved = psql(
            self.url,
            "SELECT user_id FROM identity_graph_backfill_failures "
            f"WHERE job_key = '{JOB_KEY}' AND resolved_at IS NULL ORDER BY user_id",
        )
        self.check(r, stats)
        self.check_failures([int(u) for u in unresolved.split()], last)

    def check(self, r: dict, stats: dict) -> None:
        m = self.result.mismatches
        completed = not self.result.stuck
        if not r["job_found"]:
            m.append("no job row")
            return
        if completed and r["status"] != "completed":
            m.append(f"status is {r['status']} after the replicas shut down")
        # Lost: an eligible user the graph never acknowledged, with no unresolved failure.
        # A stuck job is judged up to its cursor only (the rest is still to do).
        if completed:
            self.result.lost = r["lost"]
            ids = r["lost_ids"]
        else:
            self.result.lost = r["lost_le_cursor"]
            ids = r["lost_ids_le_cursor"]
        if self.result.lost:
            self.note(f"LOST {self.result.lost} users, e.g. {ids}")
        scanned = r["processed"] + r["failed"] + r["skipped"]

        def expect(label: str, actual, wanted) -> None:
            if actual != wanted:
                m.append(f"{label}: {actual}, expected {wanted}")

        if completed:
            expect("cursor at completion (max user id)", r["cursor"], r["max_user_id"])
        expect("processed + failed + skipped (users with id <= cursor)", scanned, r["users_le_cursor"])
        expect("failed (unresolved failure rows)", r["failed"], r["unresolved"])
        expect(
            "processed (eligible users <= cursor without an unresolved failure)",
            r["processed"],
            r["eligible_le_cursor"] - (r["unresolved"] - r["unresolved_not_eligible_or_beyond_cursor"]),
        )
        expect("skipped_deleted", r["skipped_deleted"], r["deleted_le_cursor"])
        expect("skipped_no_identifiers", r["skipped_no_identifiers"], r["no_identifiers_le_cursor"])
        expect("skipped_dry_run (a real job)", r["skipped_dry_run"], 0)
        expect(
            "skipped (sum of its reasons)",
            r["skipped"],
            r["skipped_deleted"] + r["skipped_no_identifiers"] + r["skipped_dry_run"],
        )
        expect("unresolved failures of ineligible users or beyond the cursor",
               r["unresolved_not_eligible_or_beyond_cursor"], 0)
        expect(f"users the graph acknowledged but must skip (e.g. {r['acked_not_eligible_ids']})",
               r["acked_not_eligible"], 0)
        # Observations, not failures: at-least-once delivery allows them.
        info = (
            f"eligible {r['eligible']}, acked {r['acked_unique']} ({r['acked_total']} acks), "
            f"unresolved {r['unresolved']} (of which acked {r['acked_and_unresolved']}), "
            f"runs {r['runs']} {json.dumps(r['run_outcomes'])}, graph {json.dumps(stats['outcomes'])}"
        )
        self.event("reconcile: " + info)
        if r["open_runs"]:
            self.anomaly(f"{r['open_runs']} run rows still open (ended_at NULL) after shutdown")
        if r.get("negative_runs"):
            self.anomaly(f"{r['negative_runs']} run rows with a negative counter")
        if stats.get("overlaps"):
            self.anomaly(
                f"graph saw {stats['overlaps']} overlapping PUTs for the same user "
                f"(two runners at once?), e.g. users {stats['overlap_ids'][:10]}"
            )

    def check_failures(self, unresolved: list[int], last: dict[str, str]) -> None:
        """Lost trusts the failure rows; this checks them: every unresolved
        failure must be a user whose last answer from the graph was not a 2xx
        (an error status, or a hang the app timed out on)."""
        acked_last = [u for u in unresolved if last.get(str(u)) == "ok"]
        never_sent = [u for u in unresolved if str(u) not in last]
        if acked_last:
            self.anomaly(
                f"{len(acked_last)} unresolved failures whose last graph answer was 2xx "
                f"(recorded as failed although written), e.g. users {acked_last[:10]}"
            )
        if never_sent:
            self.anomaly(
                f"{len(never_sent)} unresolved failures the graph never received, e.g. users {never_sent[:10]}"
            )
        self.event(f"failures: {len(unresolved)} unresolved, last answers "
                   + json.dumps({k: sum(1 for u in unresolved if last.get(str(u)) == k)
                                 for k in sorted({last.get(str(u), 'none') for u in unresolved})}))

    # -- all of it

    def execute(self) -> RunResult:
        try:
            self.set_up()
            self.t0 = time.monotonic()
            self.drive()
            self.shut_down_replicas()
            self.reconcile()
            for label in self.result.mismatches:
                self.event("MISMATCH " + label)
        except (ChaosError, ApiError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as error:
            self.result.error = f"{type(error).__name__}: {error}"
            self.event("ERROR " + self.result.error)
        finally:
            self.result.seconds = time.monotonic() - self.t0
            self.tear_down()
        return self.result

    def tear_down(self) -> None:
        for proc in [*self.replicas, self.graph]:
            if proc is not None:
                proc.kill9()
                if proc in Proc.registry:
                    Proc.registry.remove(proc)
        if self.created_db and not self.args.keep:
            try:
                psql(self.admin_url, f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            except (ChaosError, subprocess.TimeoutExpired) as error:
                self.result.notes.append(f"could not drop {self.db}: {error}")
        self.events_log.close()


# ---------------------------------------------------------------- main


def summarize_events(kinds: list[str]) -> str:
    counts = {k: kinds.count(k) for k in ("kill9", "sigterm", "stop-start", "pg-terminate", "dry-run", "freeze")}
    short = {"kill9": "kill9", "sigterm": "term", "stop-start": "stop", "pg-terminate": "pgkill",
             "dry-run": "dry", "freeze": "freeze"}
    inner = " ".join(f"{short[k]} {v}" for k, v in counts.items() if v)
    return f"{len(kinds):2d} events" + (f" ({inner})" if inner else "")


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--users", type=int, default=25000)
    parser.add_argument("--seed", type=int, default=None, help="run n uses seed S+n-1 (default: random)")
    parser.add_argument("--bin", required=True, help="the identity-graph-backfill binary")
    parser.add_argument("--min-events", type=int, default=4)
    parser.add_argument("--max-events", type=int, default=10)
    parser.add_argument("--min-gap", type=float, default=0.5, help="seconds between events, at least")
    parser.add_argument("--max-gap", type=float, default=4.0, help="seconds between events, at most")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a job may take before it counts as stuck (default 120 + users/50)")
    # A 429 (Retry-After: 1) holds every slot of a run for that second, as
    # a throttling graph asks; at 2% of requests a run would be held most of
    # the time, so the default keeps 429s rare but present in every run.
    parser.add_argument("--mix", default="ok=89.7,500=5,429=0.3,400=2,hang=3",
                        help="graph server answers, as weights")
    parser.add_argument("--only", type=lambda v: v.split(","), default=None,
                        help="inject only these events: kill9,sigterm,stop-start,pg-terminate,dry-run,freeze")
    parser.add_argument("--keep", action="store_true", help="keep each run's database")
    parser.add_argument("--live-source", action="store_true",
                        help="keep inserting users during the run, some committed late and out of order; "
                             "a final run must then catch every one of them up")
    parser.add_argument("--logs", default=str(ROOT / "target" / "chaos"))
    args = parser.parse_args()
    known = {"kill9", "sigterm", "stop-start", "pg-terminate", "dry-run", "freeze"}
    if args.only and not set(args.only) <= known:
        parser.error(f"--only: unknown events {sorted(set(args.only) - known)}; known: {sorted(known)}")
    if args.timeout is None:
        args.timeout = 120 + args.users / 50
    if args.seed is None:
        args.seed = secrets.randbelow(1_000_000)
    base_url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    admin_url = db_url(base_url, "postgres")

    logdir = Path(args.logs)
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True)
    drop_stale_databases(admin_url)
    log(
        f"chaos: {args.runs} runs of {args.users} users, seed {args.seed}, binary {args.bin}, "
        f"logs {logdir}"
    )

    results: list[RunResult] = []
    counted = 0
    n = 0
    # A void run (no event while the job was `running`) is replaced by the
    # next seed; a machine so fast that most runs are void fails instead.
    most = 2 * args.runs + 3
    while counted < args.runs and n < most:
        n += 1
        run = Run(n, args.seed + n - 1, args, base_url, logdir)
        result = run.execute()
        results.append(result)
        void = result.error is None and result.while_running == 0
        if not void:
            counted += 1
        status = "ERROR" if result.error else "VOID" if void else result.status
        log(
            f"run {n:2d} ({counted}/{args.runs})  seed {result.seed:<7d} users {result.users:<6d} "
            f"{summarize_events(result.events):<52s} {result.while_running:2d} while running  "
            f"{status:<9s} lost {result.lost:<4d} mismatches {len(result.mismatches):<2d} {result.seconds:6.1f}s"
        )
        for text in result.notes:
            log(f"    note: {text}")
        for text in result.mismatches:
            log(f"    mismatch: {text}")
        if void:
            log("    void: the job completed before any event was injected while it was `running`; "
                "it does not count")
        if result.error:
            log(f"    error: {result.error} (logs: {run.dir})")

    lost = sum(r.lost for r in results)
    mismatches = sum(len(r.mismatches) for r in results)
    stuck = sum(1 for r in results if r.stuck)
    errors = sum(1 for r in results if r.error)
    voids = len(results) - counted
    if errors:
        log(f"{errors} runs could not be carried out (set-up or driver errors; see above)")
    if counted < args.runs:
        log(f"only {counted} of {args.runs} runs counted after {n} attempts: "
            "too many finished before an event could be injected while running")
    log(f"{counted} runs ({voids} void), {lost} users lost, {mismatches} mismatches, {stuck} stuck")
    ok = lost == mismatches == stuck == errors == 0 and counted == args.runs
    return 0 if ok else 1


def on_signal(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    # Ctrl-C is Python's KeyboardInterrupt already; SIGTERM (and SIGHUP, unless
    # it is ignored, as under nohup) take the same way out: clean up, exit 130.
    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, on_signal)
    try:
        code = main()
    except KeyboardInterrupt as interrupt:
        print(f"\nchaos: interrupted ({interrupt or 'SIGINT'}); cleaning up", file=sys.stderr, flush=True)
        code = 130
    finally:
        cleanup_processes()
    sys.exit(code)
