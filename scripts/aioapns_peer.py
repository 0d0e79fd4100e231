"""Drive aioapns (asyncio, an independent APNs client) against an APNs endpoint such as
`ccs emulate apns`. Its own process, no gevent. Prints one JSON object.

    python scripts/aioapns_peer.py '{"host":..., "port":..., "ca_file":..., "key_file":...,
        "key_id":..., "team_id":..., "topic":..., "tokens": [...]}'   # one each, results listed
    ... '{..., "count": 20000, "concurrency": 1000, "connections": 2}'  # timed run
"""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
import sys
import time

from aioapns import APNs, NotificationRequest
from aioapns.connection import APNsProductionClientProtocol


async def main(spec: dict) -> dict:
    APNsProductionClientProtocol.APNS_SERVER = spec["host"]
    APNsProductionClientProtocol.APNS_PORT = spec["port"]
    ctx = ssl.create_default_context(cafile=spec["ca_file"])
    ctx.set_alpn_protocols(["h2"])
    with open(spec["key_file"]) as f:
        key = f.read()
    apns = APNs(key=key, key_id=spec["key_id"], team_id=spec["team_id"], topic=spec["topic"],
                ssl_context=ctx, max_connections=spec.get("connections", 1))

    async def one(token: str, i: int):
        return await apns.send_notification(NotificationRequest(
            device_token=token, message={"aps": {"alert": f"peer {i}", "badge": 1}}))

    if "tokens" in spec:
        results = [await one(t, i) for i, t in enumerate(spec["tokens"])]
        return {"results": [{"token": t, "status": r.status, "description": r.description,
                             "notification_id": r.notification_id}
                            for t, r in zip(spec["tokens"], results, strict=True)]}
    count, conc = spec["count"], spec.get("concurrency", 1000)
    token = spec.get("token", "ab" * 32)
    await one(token, -1)  # connect and warm up outside the timing
    sem = asyncio.Semaphore(conc)
    ok = 0

    async def limited(i: int) -> None:
        nonlocal ok
        async with sem:
            r = await one(token, i)
            ok += r.is_successful

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*(limited(i) for i in range(count)))
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"count": count, "ok": ok, "seconds": elapsed, "cpu": cpu}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
