"""`ccs send`'s check that a provider's token endpoint answers before any message goes out.

The FCM HTTP v1 provider fetches an OAuth token on its first send; an endpoint that takes the
connection and never answers would hold every message for the provider's whole request budget
and end as AUTH_ERROR. Asked here once, within --connect-timeout, it is exit 3 like any other
service that cannot be reached. The declaration names it as the provider's preflight.
"""

from __future__ import annotations

from typing import Any

import gevent

from ccs.registry import Refused


def token_endpoint(provider: Any, timeout: float) -> str | None:
    """None when the provider has no token endpoint or it hands out a token within `timeout`;
    else why it could not be reached. Raises Refused when it refuses the credentials."""
    account = getattr(provider, "account", None)
    if account is None or not getattr(account, "token_uri", None):
        return None
    from ccs.transport.http11 import HttpClient
    from http_fallback.fcm.auth import AuthError, TokenSource

    config = getattr(provider, "config", None)
    http = HttpClient(ca_file=getattr(config, "ca_file", None), timeout=timeout,
                      connect_timeout=timeout)
    try:
        with gevent.Timeout(timeout):
            TokenSource(account, http, timeout=timeout).get()
    except gevent.Timeout:
        return f"the token endpoint {account.token_uri} did not answer within {timeout:g}s"
    except AuthError as exc:
        if not exc.retryable:
            raise Refused(str(exc)) from None
        return f"the token endpoint {account.token_uri}: {exc}"
    finally:
        http.close()
    return None
