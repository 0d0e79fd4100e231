"""The GCM payload element as a slixmpp stanza plugin.

`<gcm xmlns="google:mobile:data">JSON</gcm>` inside a `<message>`. CCS also sent the prefixed
form `<data:gcm xmlns:data="google:mobile:data">`: the parser resolves both to the same
namespaced tag, so matching on `{google:mobile:data}gcm` covers them. slixmpp escapes the JSON
text on output, which string templates get wrong.
"""

from __future__ import annotations

from slixmpp.stanza import Message
from slixmpp.xmlstream import ElementBase, register_stanza_plugin

GCM_NS = "google:mobile:data"
GCM_TAG = f"{{{GCM_NS}}}gcm"


class Gcm(ElementBase):
    name = "gcm"
    namespace = GCM_NS
    plugin_attrib = "gcm"
    interfaces = {"json"}

    def get_json(self) -> str:
        return self.xml.text or ""

    def set_json(self, value: str) -> None:
        self.xml.text = value

    def del_json(self) -> None:
        self.xml.text = None


register_stanza_plugin(Message, Gcm)
