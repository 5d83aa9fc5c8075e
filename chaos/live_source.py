"""scripts/chaos --live-source: users keep signing up while the job runs.

A thread inserts new users after the seeded ones, each in its own
transaction through a `psql` session. Some of those transactions are held
open and committed later, out of order, after users with higher ids have
committed and the scan may have passed them: the late commits that the
runner's catch-up exists for (docs/runs.md). When the run is
over, every held transaction is committed, and chaos.py starts the job once
more; after that final run, every eligible user up to the cursor must be in
the graph or recorded as failed.

Only the standard library.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time


class LiveSource:
    def __init__(self, db_url: str, first_id: int, rng: random.Random, log) -> None:
        self.db_url = db_url
        self.next_id = first_id
        self.rng = rng
        self.log = log
        self.held: list[tuple[int, subprocess.Popen, float]] = []
        self.inserted = 0
        self.committed_late = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="live-source", daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stops inserting and commits every transaction still held."""
        self.stopping.set()
        self.thread.join(timeout=30)
        for user_id, session, _ in self.held:
            self._commit(user_id, session)
        self.held.clear()

    def summary(self) -> str:
        return (f"live source: {self.inserted} users inserted during the run, "
                f"{self.committed_late} of them committed late, out of order")

    def _session(self) -> subprocess.Popen:
        return subprocess.Popen(
            ["psql", self.db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )

    def _insert_sql(self, user_id: int) -> str:
        return (
            "INSERT INTO users (id, email, phone, signup_ip, device_id) VALUES "
            f"({user_id}, 'live{user_id}@example.org', NULL, '10.250.{user_id % 250}.{user_id % 200}', "
            f"'live-device-{user_id % 97}');\n"
        )

    def _commit(self, user_id: int, session: subprocess.Popen) -> None:
        try:
            session.stdin.write("COMMIT;\n")
            session.stdin.close()
            session.wait(timeout=30)
            if session.returncode != 0:
                self.errors.append(f"user {user_id}: {session.stderr.read().strip()}")
            else:
                self.committed_late += 1
        except (OSError, subprocess.TimeoutExpired) as error:
            self.errors.append(f"user {user_id}: {error}")

    def _run(self) -> None:
        while not self.stopping.is_set():
            user_id = self.next_id
            self.next_id += 1
            if self.rng.random() < 0.25:
                # Held open for seconds, while later ids commit and the scan
                # may pass this one.
                session = self._session()
                session.stdin.write("BEGIN;\n" + self._insert_sql(user_id))
                session.stdin.flush()
                self.held.append((user_id, session, time.monotonic()))
            else:
                done = subprocess.run(
                    ["psql", self.db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                     self._insert_sql(user_id)],
                    capture_output=True, text=True, timeout=30,
                )
                if done.returncode != 0:
                    self.errors.append(f"user {user_id}: {done.stderr.strip()}")
            self.inserted += 1
            # Commit held transactions out of order, each after 1.5 s at least.
            ripe = [i for i, (_, _, since) in enumerate(self.held) if time.monotonic() - since > 1.5]
            if ripe and self.rng.random() < 0.2:
                held_id, session, _ = self.held.pop(self.rng.choice(ripe))
                self._commit(held_id, session)
            time.sleep(self.rng.uniform(0.02, 0.15))
