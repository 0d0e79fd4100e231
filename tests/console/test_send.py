"""`ccs send` as a real subprocess, configured by the environment, against the CCS emulator."""

from __future__ import annotations

import json

import pytest

from ccs.xmpp.emulator import CcsEmulator
from tests.helpers import run_ccs

SENDER, KEY = "99887766", "console-key"


@pytest.fixture
def emu(pki):
    with CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki) as e:
        yield e


def env_for(emu, **extra):
    env = {"CCS_HOST": emu.host, "CCS_PORT": str(emu.port), "CCS_SENDER_ID": SENDER,
           "CCS_SERVER_KEY": KEY, "CCS_CA_FILE": emu.ca_file, "CCS_CONNECTIONS": "2"}
    env.update(extra)
    return env


def test_send_json_lines_and_exit_status(emu, tmp_path):
    emu.set_token_error("gone", "DEVICE_UNREGISTERED")
    emu.set_canonical("old", "new")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("t1\n# a comment\n\ngone\nold\n" + "".join(f"bulk-{i}\n" for i in range(50)))
    res = run_ccs(["send", "--tokens-file", str(tokens), "--data", "k=v", "--title", "Hi",
                   "--ttl", "60", "--json"], env=env_for(emu))
    assert res.returncode == 1, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["to"] for x in lines] == ["t1", "gone", "old"] + [f"bulk-{i}" for i in range(50)]
    assert set(lines[0]) >= {"message_id", "to", "via", "status", "error", "canonical_id",
                             "attempts"}
    assert lines[0]["status"] == "ok" and lines[0]["via"] == "ccs" and lines[0]["error"] is None
    assert lines[1]["status"] == "failed" and lines[1]["error"] == "DEVICE_UNREGISTERED"
    assert lines[2]["status"] == "ok" and lines[2]["canonical_id"] == "new"
    sent = {d.message_id: d.payload for d in emu.record.downstream}
    assert sent[lines[0]["message_id"]]["data"] == {"k": "v"}
    assert sent[lines[0]["message_id"]]["notification"] == {"title": "Hi"}
    assert sent[lines[0]["message_id"]]["time_to_live"] == 60


def test_send_all_ok_exits_zero_with_text_lines(emu):
    res = run_ccs(["send", "a", "b", "--token", "c"], env=env_for(emu))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("ok ") for line in lines)


def test_send_to_topic(emu):
    res = run_ccs(["send", "--topic", "news", "--data", "k=v", "--json"], env=env_for(emu))
    assert res.returncode == 0, res.stderr
    assert emu.record.downstream[0].payload["to"] == "/topics/news"


def test_wrong_key_exits_2(emu):
    res = run_ccs(["send", "a", "--connect-timeout", "3"],
                  env=env_for(emu, CCS_SERVER_KEY="nope"))
    assert res.returncode == 2
    assert "authentication refused" in res.stderr
    assert "nope" not in res.stderr + res.stdout


def test_unreachable_exits_3(emu):
    res = run_ccs(["send", "a", "--connect-timeout", "1"], env=env_for(emu, CCS_PORT="1"))
    assert res.returncode == 3
    assert "could not reach" in res.stderr


@pytest.mark.parametrize("args, env_extra, needle", [
    (["send", "a", "--data", "from=x"], {}, "data.from"),
    (["send", "a", "--data", "novalue"], {}, "KEY=VALUE"),
    (["send"], {}, "no target"),
    (["send", "a"], {"CCS_SENDER_ID": ""}, "CCS_SENDER_ID"),
    (["send", "a"], {"CCS_PORT": "http"}, "CCS_PORT"),
    (["send", "a", "--topic", "x"], {}, "only one kind"),
])
def test_bad_usage_exits_2_naming_the_problem(emu, args, env_extra, needle):
    res = run_ccs(args, env=env_for(emu, **env_extra))
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert emu.record.downstream == []


def test_run_sends_keeps_order_flushes_early_and_bounds_what_waits():
    """One slow result holds back the lines after it, and at most max_outstanding wait."""
    import io

    import gevent

    from ccs.console.send import run_sends
    from ccs.outcome import Outcome, SendResult, Status

    class Out(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.flushed: list[int] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue().count("\n"))

    results: list[SendResult] = []
    sent_while_slow: list[int] = []

    def send(n: int) -> SendResult:
        r = SendResult()
        results.append(r)
        if n == 0:  # the slow one, resolved only once sending has paused behind it
            gevent.spawn(lambda: (gevent.idle(), sent_while_slow.append(len(results)),
                                  r.resolve(Outcome(Status.OK, "x", "0"))))
        else:
            r.resolve(Outcome(Status.FAILED if n == 7 else Status.OK, "x", str(n)))
        return r

    out = Out()
    code = run_sends(send, iter(range(10)), as_json=True, max_outstanding=4, progress=False,
                     out=out)
    assert code == 1
    assert [json.loads(x)["to"] for x in out.getvalue().splitlines()] == \
        [str(n) for n in range(10)]
    assert sent_while_slow == [4]  # sending paused at 4 waiting results
    assert out.flushed[0] == 4  # the first flush carried every line the slow one held back
