#!/usr/bin/env python3
"""The peer in bench_ccs.py: slixmpp's own ClientXMPP on plain asyncio, one connection,
window 100, the same messages. Prints "<msgs_per_s> <cpu_us_per_msg>".

usage: peer_slixmpp_ccs.py HOST PORT CA_FILE SENDER_ID SERVER_KEY COUNT
"""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
import sys
import time

from slixmpp import ClientXMPP
from slixmpp.stanza import Message
from slixmpp.xmlstream import ElementBase, register_stanza_plugin
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

WINDOW = 100


class Gcm(ElementBase):
    name, namespace, plugin_attrib = "gcm", "google:mobile:data", "gcm"
    interfaces: set[str] = set()


register_stanza_plugin(Message, Gcm)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Peer(ClientXMPP):
    def __init__(self, sender: str, key: str, ca_file: str, count: int) -> None:
        jid = f"{sender}@gcm.googleapis.com"
        super().__init__(jid, key)
        self.credentials["username"] = jid  # slixmpp would send the bare sender id
        self.ssl_context = ssl.create_default_context(cafile=ca_file)
        self.enable_direct_tls = True
        self.enable_starttls = False
        self.register_handler(Callback(
            "gcm", MatchXPath("{jabber:client}message/{google:mobile:data}gcm"), self.on_gcm))
        self.add_event_handler("session_start", self.start)
        self.count, self.sent, self.acked = count, 0, 0
        self.done = asyncio.Event()

    def send_one(self) -> None:
        msg = Message()
        msg["gcm"].xml.text = json.dumps({
            "to": f"token-{self.sent % 1000:04d}-" + "a" * 140,
            "message_id": f"p{self.sent}",
            "data": {"text": "x" * 120, "kind": "bench"},
        })
        self.send(msg)
        self.sent += 1

    def on_gcm(self, msg: Message) -> None:
        if json.loads(msg["gcm"].xml.text).get("message_type") == "ack":
            self.acked += 1
            if self.sent < self.count:
                self.send_one()
            if self.acked == self.count:
                self.done.set()

    async def start(self, _event: object) -> None:
        c0, t0 = cpu(), time.perf_counter()
        for _ in range(min(WINDOW, self.count)):
            self.send_one()
        await self.done.wait()
        elapsed, used = time.perf_counter() - t0, cpu() - c0
        print(self.count / elapsed, used / self.count * 1e6)
        self.disconnect()


def main() -> None:
    host, port, ca_file, sender, key, count = sys.argv[1:7]
    peer = Peer(sender, key, ca_file, int(count))
    peer.connect(host, int(port))
    asyncio.get_event_loop().run_until_complete(peer.disconnected)


if __name__ == "__main__":
    main()
