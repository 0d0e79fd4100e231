import pytest

from ccs.testing.pki import TestPKI, make_test_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A throw-away CA and server certificate for 127.0.0.1, localhost and the XMPP domains."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


from tests.redis_cluster_support import (  # noqa: E402, F401 (fixtures: private Redis servers)
    cluster,
    cluster_url,
    crash_redis,
    tls_redis,
)
from tests.redis_support import redis_url  # noqa: E402, F401 (fixture: a Redis outbox URL)
