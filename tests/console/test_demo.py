"""`ccs demo` (what scripts/demo runs) completes its scripted exchange and exits 0."""

from tests.helpers import run_ccs


def test_demo_runs_the_whole_exchange():
    res = run_ccs(["demo", "--messages", "60"], timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "receipt stored" in out and "upstream record" in out
    assert "60/60 ok" in out and "token event: unregistered demo-dead-token" in out
    assert "ok via http" in out and "ok via apns" in out
    assert out.rstrip().endswith("every message ended in exactly one recorded outcome.")
