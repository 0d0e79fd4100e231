"""`ccs demo`: a scripted CCS exchange against the emulator on loopback, narrated."""

from __future__ import annotations

import sys

import click
from gevent.queue import Queue


def _say(text: str) -> None:
    click.echo(text)
    sys.stdout.flush()


@click.command()
@click.option("--messages", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="How many downstream messages in the bulk step.")
def demo(messages: int) -> None:
    """Run the CCS emulator and a client, and show downstream, receipts, upstream, a drain and a
    dead token."""
    from ccs.client import CcsClient, CcsConfig
    from ccs.emulator import CcsEmulator
    from ccs.message import build_message

    sender, key = "1029384756", "demo-server-key"
    with CcsEmulator(sender_id=sender, server_key=key, receipt_delay=0.05,
                     upstream_redeliver=1.0, drain_grace=0.2) as emu:
        _say(f"CCS emulator listening on {emu.host}:{emu.port} (TLS, test CA {emu.ca_file})")
        client = CcsClient(CcsConfig(sender_id=sender, server_key=key, host=emu.host,
                                     port=emu.port, ca_file=emu.ca_file, connections=2))
        receipts: Queue = Queue()
        upstream: Queue = Queue()
        tokens: Queue = Queue()
        client.on_receipt(receipts.put)
        client.on_upstream(upstream.put)
        client.token_events.add(tokens.put)
        client.start()
        if not client.wait_ready(10):
            raise click.ClickException("the client could not log in to the emulator")
        sessions = [s["jid"] for s in client.stats()["sessions"]]
        _say(f"logged in: {len(sessions)} sessions as {', '.join(sessions)}")

        _say("\n1. downstream with a delivery receipt")
        msg = build_message("demo-device-1", data={"greeting": "hello <world> & all"},
                            delivery_receipt_requested=True)
        out = client.send(msg).get(timeout=10)
        _say(f"   {out.status}: message {out.message_id} to {out.to}")
        receipt = receipts.get(timeout=10)
        _say(f"   receipt {receipt.message_id}: {receipt.status} (acked back to CCS)")

        _say("\n2. upstream message from a device, echoed back")
        emu.send_upstream("demo-device-2", {"text": "ping from the phone"})
        up = upstream.get(timeout=10)
        _say(f"   upstream {up.message_id} from {up.sender}: {up.data} (acked)")
        echo = client.send(build_message(up.sender, data={"echo": up.data["text"]})).get(10)
        _say(f"   echo {echo.status}: {echo.message_id}")

        _say(f"\n3. {messages} messages while the server drains a connection")
        emu.set_faults(drain_after=max(10, messages // 4))
        results = [client.send(build_message(f"bulk-{i}", data={"n": str(i)}))
                   for i in range(messages)]
        outcomes = [r.get(timeout=60) for r in results]
        emu.set_faults(drain_after=None)
        stats = client.stats()
        ok = sum(o.ok for o in outcomes)
        _say(f"   {ok}/{messages} ok; drains seen: {stats['drains']}; re-sent after drain "
             f"nacks: {stats['retried']}; lost: {messages - ok}")

        _say("\n4. a token the service says is gone")
        emu.set_token_error("demo-dead-token", "DEVICE_UNREGISTERED")
        dead = client.send(build_message("demo-dead-token")).get(timeout=10)
        event = tokens.get(timeout=10)
        _say(f"   {dead.status}: {dead.error}; token event: {event.kind} {event.token}")

        client.stop(5)
        _say("\ndone: every message ended in exactly one outcome.")
        if ok != messages or not out.ok or not echo.ok or dead.ok:
            sys.exit(1)
