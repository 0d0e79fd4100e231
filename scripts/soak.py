#!/usr/bin/env python3
"""Soak: gateway processes on one Redis outbox against the CCS, FCM v1 and APNs emulators
while the emulators inject every fault they support and gateways are killed and restarted.

Faults: CCS drains, dropped connections, nacks (SERVICE_UNAVAILABLE), slow acks; FCM 503 with
Retry-After and 500; APNs GOAWAY, REFUSED_STREAM resets, the stream limit dropped to 1 with
streams open, GOAWAY with hundreds of streams above its last_stream_id, and connections
dropped before TLS. Gateway 0 lives throughout (its memory is watched); the others are killed
(SIGKILL, every third a clean SIGTERM) and replaced. At the end, with faults off, the queue
drains and every accepted message must have exactly one terminal outcome (record and outcome
stream). With --cluster the outbox is a 3-master Redis Cluster with a replica each, started
here on loopback ports, and Redis itself fails too: every --redis-every seconds a master is
SIGKILLed (its replica takes over; the old master restarts as a replica) or a replica is
promoted with CLUSTER FAILOVER, in turn. Loopback only, bounded by --seconds, --max-messages
and --grace. Last line:
`result: seconds=.. accepted=.. terminal=.. lost=.. duplicates=.. ... rss_start_kb=..
rss_end_kb=..`; exit status 1 when anything is lost or has two outcomes.
"""

from __future__ import annotations

import argparse
import itertools
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gevent

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ccs.gateway.outbox.base import StoreUnavailable  # noqa: E402
from scripts.scale_support import KEY, REDIS, SENDER, Gateways, cleanup  # noqa: E402

KEY_ID, TEAM_ID, TOPIC = "SOAKKEY123", "SOAKTEAM12", "com.example.soak"


def rss_self_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from ccs.gateway.outbox.redis import RedisStore
        from ccs.testing.pki import make_test_pki
        from ccs.xmpp.emulator import CcsEmulator
        from http_fallback.apns.emulator import ApnsEmulator
        from http_fallback.fcm.emulator import FcmEmulator

        self.args = args
        self.rnd = random.Random(args.seed)
        pki = make_test_pki(tmp)
        key = ec.generate_private_key(ec.SECP256R1())
        key_file = tmp / "apns.p8"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        self.ccs = CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki, record_limit=None,
                               drain_grace=0.2).start()
        self.fcm = FcmEmulator(pki, "soak-project", record_limit=1_000_000).start()
        self.fcm.create_service_account(str(tmp / "sa.json"))
        self.apns = ApnsEmulator(pki, keys={KEY_ID: key.public_key()}, team_id=TEAM_ID,
                                 topics=(TOPIC,), record=1_000_000).start()
        self.prefix = f"soak-{secrets.token_hex(4)}"
        self.cluster = None
        if args.cluster:
            from ccs.testing.redis_servers import RedisCluster

            self.cluster = RedisCluster(masters=3, replicas=1).start()
            self.url = self.cluster.url(self.prefix)
        else:
            self.url = f"{REDIS}?prefix={self.prefix}"
        self.store = RedisStore(self.url)
        info = {"host": self.ccs.host, "port": self.ccs.port, "ca_file": pki.ca_file}
        self.gws = Gateways(self.url, [(None, info)], connections=2, count=args.gateways,
                            CCS_PROVIDERS="ccs,http,apns",
                            CCS_FCM_CREDENTIALS=str(tmp / "sa.json"), CCS_FCM_URL=self.fcm.url,
                            CCS_FCM_IID_URL=self.fcm.url, CCS_APNS_HOST="127.0.0.1",
                            CCS_APNS_PORT=str(self.apns.port), CCS_APNS_KEY_FILE=str(key_file),
                            CCS_APNS_KEY_ID=KEY_ID, CCS_APNS_TEAM_ID=TEAM_ID,
                            CCS_APNS_TOPIC=TOPIC, CCS_APNS_CONNECTIONS="1",
                            CCS_STOP_TIMEOUT="3", CCS_OUTBOX_RECORD_TTL=str(args.record_ttl),
                            CCS_OUTBOX_STREAM_MAXLEN=str(args.stream_maxlen))
        # followed live from the start: with records expiring and streams trimmed, what was
        # read as it came is the record of every outcome
        self.outcomes: Counter[str] = Counter()
        self.status: dict[str, str] = {}
        self.memory: list[tuple[float, int]] = []  # (seconds since start, Redis used_memory kB)
        self.accepted: set[str] = set()
        self.faults: Counter[str] = Counter()
        self.kills = 0
        self.refused = 0  # enqueue batches refused while Redis was away (then offered again)
        self.redis_faults: Counter[str] = Counter()
        self.producing = True
        self.faulting = True

    # the load
    def produce(self) -> None:
        from ccs.gateway.dispatcher import Dispatcher

        per_tick = max(1, self.args.rate // 10)
        n = 0
        while self.producing and n < self.args.max_messages:
            now = time.time()
            batch = []
            for _ in range(min(per_tick, self.args.max_messages - n)):
                r = self.rnd.random()
                mid = f"s{n:07d}"
                if r < 0.7:
                    lane, msg = "fcm", {"to": f"tok{n}", "message_id": mid}
                elif r < 0.85:
                    lane, msg = "http", {"to": f"h{n}", "message_id": mid,
                                         "data": {"n": str(n)}}
                    if n % 10 == 0:  # 503 with Retry-After once, then delivered
                        self.fcm.fail(f"h{n}", "unavailable", times=1, retry_after=1)
                        self.faults["fcm_503_retry_after"] += 1
                    elif n % 23 == 0:
                        self.fcm.fail(f"h{n}", "internal", times=1)
                        self.faults["fcm_500"] += 1
                else:
                    lane, msg = "apns", {"to": f"{n:064x}", "alert": f"soak {n}"}
                batch.append(Dispatcher._new(msg, lane, now, n))
                n += 1
            while True:
                try:
                    self.store.add(batch, now)
                    break
                except StoreUnavailable:  # Redis failing over: the same ids again shortly
                    self.refused += 1
                    gevent.sleep(0.2)
            # (a batch offered again reports what its first try stored as "not new": every
            # id is accepted once its batch was acknowledged)
            self.accepted.update(m.id for m in batch)
            gevent.sleep(0.1)

    def inject(self) -> None:
        actions = [self._ccs_drain, self._ccs_drop, self._ccs_nacks_slow, self._apns_goaway,
                   self._apns_refuse, self._apns_limit_drop, self._apns_drop,
                   self._apns_goaway_many, self._ccs_calm]
        for action in itertools.cycle(actions):
            if not self.faulting:
                return
            action()
            gevent.sleep(self.args.fault_every)

    def _ccs_drain(self) -> None:
        live = [c.id for c in self.ccs.connections if c.open and not c.draining]
        if live:
            self.ccs.drain(self.rnd.choice(live))
            self.faults["ccs_drain"] += 1

    def _ccs_drop(self) -> None:
        live = [c.id for c in self.ccs.connections if c.open]
        if live:
            self.ccs.drop(self.rnd.choice(live))
            self.faults["ccs_drop"] += 1

    def _ccs_nacks_slow(self) -> None:
        self.ccs.set_faults(unavailable_every=7, ack_delay=0.05)
        self.faults["ccs_nacks_and_slow_acks"] += 1

    def _ccs_calm(self) -> None:
        self.ccs.set_faults(unavailable_every=None, ack_delay=0.0)

    def _apns_goaway(self) -> None:
        self.apns.goaway("Shutdown")
        self.faults["apns_goaway"] += 1

    def _apns_refuse(self) -> None:
        self.apns.refuse_next(20)
        self.faults["apns_refused_streams"] += 20

    def _apns_limit_drop(self) -> None:
        """SETTINGS_MAX_CONCURRENT_STREAMS 1 while requests stall (streams open); the
        answers after release raise it again."""
        self.apns.stall()
        gevent.sleep(0.5)
        self.apns.set_stream_limit(1)
        gevent.sleep(0.3)
        self.apns.release()
        self.faults["apns_limit_drops_with_streams_open"] += 1

    def _apns_goaway_many(self) -> None:
        """Stall requests until streams pile up, then GOAWAY with last_stream_id below nearly
        all of them: those above go out again on a new connection, the rest end unknown."""
        self.apns.stall()
        gevent.sleep(5.0)  # ~300 streams at the default rate
        held = [sid for _, sid in self.apns.held_streams()]
        last = min(held) if held else None
        self.apns.goaway("Shutdown", last_stream_id=last)
        self.apns.release()
        self.faults["apns_goaway_streams_above_last"] += max(0, len(held) - 1)

    def _apns_drop(self) -> None:
        self.apns.drop_next_connections(1)
        self.faults["apns_dropped_connections"] += 1

    def churn(self) -> None:
        """Kill a gateway other than gateway 0 now and then, and start its replacement."""
        import signal

        if self.args.gateways < 2:
            return
        while self.faulting:
            gevent.sleep(self.args.kill_every)
            if not self.faulting:
                return
            i = self.rnd.randrange(1, self.args.gateways)
            p = self.gws.procs[i]
            if p is not None:
                self.kills += 1
                if self.kills % 3 == 0:
                    p.send_signal(signal.SIGTERM)
                    p.wait()
                    self.gws.procs[i] = None
                else:
                    self.gws.kill(i)
            self.gws.start(i)

    def redis_churn(self) -> None:
        """Cluster only: SIGKILL a master (its replica takes over, it comes back as a replica)
        or promote a replica with CLUSTER FAILOVER, in turn."""
        if self.cluster is None:
            return
        n = 0
        while self.faulting:
            gevent.sleep(self.args.redis_every)
            if not self.faulting:
                return
            masters = [x for x in self.cluster.nodes if x.proc and x.proc.poll() is None
                       and x.client().info("replication")["role"] == "master"]
            victim = self.rnd.choice(masters)
            if n % 2 == 0:
                victim.kill()
                self._wait_slots_served()
                victim.start()  # rejoins as a replica of the promoted one
                self.redis_faults["master_killed_and_restarted"] += 1
            else:
                self.cluster.failover(victim)
                self.redis_faults["replica_promoted"] += 1
            n += 1

    def _wait_slots_served(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = [x for x in self.cluster.nodes if x.proc and x.proc.poll() is None]
            try:
                if all(x.client().cluster("info")["cluster_state"] == "ok" for x in live):
                    return
            except Exception:
                pass
            gevent.sleep(0.1)

    def print_stuck(self, most: int = 10) -> None:
        """What holds the queue: each unfinished record, its stream entry and pending state."""
        from ccs.gateway.outbox.redis import GROUP

        r, shown = self.store.redis, 0
        for mid in sorted(self.accepted):
            rec = r.hgetall(f"{self.store.shard(mid)}m:{mid}")
            if rec.get("state") not in ("queued", "in_flight"):
                continue
            q = f"{self.store.shard(mid)}q:{rec['lane']}"
            entry = rec.get("entry", "")
            in_stream = bool(r.xrange(q, min=entry, max=entry)) if entry else False
            pel = r.xpending_range(q, GROUP, entry, entry, 1) if entry else []
            group = next((g for g in r.xinfo_groups(q) if g["name"] == GROUP), None)
            print(f"stuck {mid}: state={rec['state']} entry={entry} in_stream={in_stream} "
                  f"pending={pel} group_last_delivered={group and group['last-delivered-id']}",
                  flush=True)
            shown += 1
            if shown >= most:
                return

    def follow_outcomes(self) -> None:
        for _, data in self.store.tail(["outcome"], start="0-0"):
            self.outcomes[data["id"]] += 1
            self.status[data["id"]] = data["status"]

    def sample_memory(self, began: float) -> None:
        while True:
            self.memory.append((time.monotonic() - began, self.redis_memory_kb()))
            gevent.sleep(self.args.seconds / 6)

    # the check
    def check(self) -> dict[str, Any]:
        if self.args.record_ttl > 0:
            return self.check_followed()
        r = self.store.redis
        ids = sorted(self.accepted)
        states: Counter[str] = Counter()
        stuck: Counter[str] = Counter()  # lane:state of every message not yet terminal
        terminal: set[str] = set()
        for i in range(0, len(ids), 1000):
            pipe = r.pipeline(transaction=False)
            for mid in ids[i:i + 1000]:
                pipe.hmget(f"{self.store.shard(mid)}m:{mid}", "state", "lane")
            for mid, (st, lane) in zip(ids[i:i + 1000], pipe.execute(), strict=True):
                states[st or "missing"] += 1
                if st in ("ok", "failed", "expired", "unknown"):
                    terminal.add(mid)
                else:
                    stuck[f"{lane}:{st}"] += 1
        outcomes: Counter[str] = Counter()
        for key in self.store.stream_keys("outcome"):
            last = "-"
            while True:
                rows = r.xrange(key, min=last, count=10000)
                rows = [x for x in rows if x[0] != last]
                if not rows:
                    break
                outcomes.update(f["id"] for _, f in rows)
                last = rows[-1][0]
        return self.summary(ids, terminal, outcomes, states, stuck)

    def check_followed(self) -> dict[str, Any]:
        """Records expire here: every accepted id needs one outcome among those followed."""
        ids = sorted(self.accepted)
        deadline = time.monotonic() + 30
        while not set(ids) <= set(self.outcomes) and time.monotonic() < deadline:
            gevent.sleep(0.2)  # the follower catching up with the last outcomes
        states = Counter(self.status.get(i, "missing") for i in ids)
        stuck = Counter(st for i in ids if (st := self.status.get(i, "missing"))
                        not in ("ok", "failed", "expired", "unknown"))
        return self.summary(ids, set(self.outcomes), self.outcomes, states, stuck)

    def summary(self, ids: list[str], terminal: set[str], outcomes: Counter[str],
                states: Counter[str], stuck: Counter[str]) -> dict[str, Any]:
        fcm_ok = Counter(s.target for s in self.fcm.seen
                         if s.path.endswith("messages:send") and s.status == 200)
        apns_ok = Counter(s.token for s in self.apns.seen if s.status == 200)
        ccs_acked = Counter(a.payload.get("message_id") for a in self.ccs.record.acks)
        # delivered twice = acked twice (a nacked message was not delivered, its retry is not
        # a duplicate)
        dups = {"ccs": sum(v - 1 for v in ccs_acked.values() if v > 1),
                "fcm": sum(v - 1 for v in fcm_ok.values() if v > 1),
                "apns": sum(v - 1 for v in apns_ok.values() if v > 1)}
        return {
            "accepted": len(ids), "terminal": len(terminal), "duplicates_by": dups,
            "lost": len(set(ids) - terminal) + len(set(ids) - set(outcomes)),
            "two_outcomes": sum(1 for v in outcomes.values() if v > 1),
            "duplicates": sum(dups.values()),
            "states": dict(states), "stuck": dict(stuck),
            "resent": self.store.counts()["resent"],
        }

    def run(self) -> int:
        a = self.args
        began = time.monotonic()
        self.gws.start_all()
        self.gws.wait_ready(self.store, timeout=60)
        procs0 = self.gws.procs[0]
        rss_start = self.gws_rss(procs0)
        redis_start = self.redis_memory_kb()
        group = gevent.pool.Group()
        group.spawn(self.produce)
        group.spawn(self.inject)
        group.spawn(self.churn)
        group.spawn(self.redis_churn)
        watchers = gevent.pool.Group()
        watchers.spawn(self.follow_outcomes)
        watchers.spawn(self.sample_memory, began)
        gevent.sleep(a.seconds)
        self.producing = False
        self.faulting = False
        group.join(timeout=30)
        group.kill()
        self._ccs_calm()
        rss_end = self.gws_rss(self.gws.procs[0])
        deadline = time.monotonic() + a.grace
        while True:
            c = self.store.counts()
            if c["queued"] + c["in_flight"] == 0:
                break
            if time.monotonic() > deadline:
                print(f"queue did not drain within {a.grace}s: {c}", flush=True)
                self.print_stuck()
                break
            gevent.sleep(0.2)
        self.gws.stop()
        redis_end = self.redis_memory_kb()
        out = self.check()
        watchers.kill()
        print(f"faults injected: {dict(self.faults)}; gateway kills/stops: {self.kills}")
        if self.cluster is not None:
            print(f"Redis faults: {dict(self.redis_faults)}; enqueue batches refused meanwhile "
                  f"and offered again: {self.refused}")
        print(f"states: {out['states']}; not terminal by lane: {out['stuck']}")
        print(f"resent (taken over or put back): {out['resent']}; "
              f"delivered twice per emulator: {out['duplicates_by']} (CCS: resent after a "
              "dropped connection or a gateway kill; at-least-once)")
        print(f"gateway 0 resident memory: {rss_start} kB at start, {rss_end} kB at end; "
              f"this process {rss_self_kb()} kB; Redis used_memory {redis_start} kB at start, "
              f"{redis_end} kB at end (CCS_OUTBOX_RECORD_TTL={a.record_ttl:g})")
        print("Redis used_memory during the run: " + ", ".join(
            f"{t:.0f}s {kb} kB" for t, kb in self.memory))
        st = out["states"]
        print(f"result: seconds={time.monotonic() - began:.0f} accepted={out['accepted']} "
              f"terminal={out['terminal']} lost={out['lost']} duplicates={out['duplicates']} "
              f"two_outcomes={out['two_outcomes']} ok={st.get('ok', 0)} "
              f"failed={st.get('failed', 0)} expired={st.get('expired', 0)} "
              f"unknown={st.get('unknown', 0)} resent={out['resent']} kills={self.kills} "
              f"rss_start_kb={rss_start} rss_end_kb={rss_end}")
        return 1 if out["lost"] or out["two_outcomes"] else 0

    def redis_memory_kb(self) -> int:
        """used_memory of every master (the outbox's Redis), in kB."""
        if self.cluster is None:
            return int(self.store.redis.info("memory")["used_memory"]) // 1024
        total = 0
        for x in self.cluster.nodes:
            if x.proc is not None and x.proc.poll() is None:
                c = x.client()
                if c.info("replication")["role"] == "master":
                    total += int(c.info("memory")["used_memory"])
                c.close()
        return total // 1024

    def gws_rss(self, proc: Any) -> int:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except (OSError, AttributeError):
            pass
        return 0

    def close(self) -> None:
        self.gws.stop()
        self.store.close()
        self.ccs.stop()
        self.fcm.stop()
        self.apns.stop()
        if self.cluster is not None:
            self.cluster.stop()
        else:
            cleanup(self.prefix)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of load and faults")
    ap.add_argument("--max-messages", type=int, default=30000)
    ap.add_argument("--rate", type=int, default=400, help="messages enqueued per second")
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--fault-every", type=float, default=1.0, help="seconds between faults")
    ap.add_argument("--kill-every", type=float, default=10.0,
                    help="seconds between gateway kills")
    ap.add_argument("--grace", type=float, default=90.0,
                    help="seconds the queue may take to drain at the end")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--record-ttl", type=float, default=0.0,
                    help="CCS_OUTBOX_RECORD_TTL of the gateways: with it, finished records "
                         "expire and Redis memory levels off; outcomes are then checked from "
                         "the outcome streams followed live")
    ap.add_argument("--stream-maxlen", type=int, default=1_000_000,
                    help="CCS_OUTBOX_STREAM_MAXLEN of the gateways")
    ap.add_argument("--cluster", action="store_true",
                    help="run on a private 3-master Redis Cluster with Redis faults")
    ap.add_argument("--redis-every", type=float, default=15.0,
                    help="seconds between Redis faults (--cluster)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak = Soak(args, Path(tmp))
        try:
            code = soak.run()
        finally:
            soak.close()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
