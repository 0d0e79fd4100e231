"""A third-party provider as a package of its own: `CCS_PLUGINS=tests.plugin_webpush` and
`CCS_PROVIDERS=webpush` run it through the gateway and `ccs send`, with no edit in ccs/.

It POSTs each message as JSON to CCS_WEBPUSH_URL (a loopback server: see emulator.py). Imported,
it registers its declaration; `spec` is also what an entry point in the `ccs_gateway.providers`
group would name.
"""

from __future__ import annotations

from ccs import registry
from tests.plugin_webpush.declaration import SPEC, spec

registry.register(SPEC)

__all__ = ["SPEC", "spec"]
