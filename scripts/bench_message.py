"""Benchmark: cost of validate_downstream on typical CCS messages (pure CPU, no I/O).

Usage: python scripts/bench_message.py [--number N]
The last line is machine-readable:
  BENCH message_validate typical_us=<f> data_only_us=<f> condition_us=<f> build_us=<f>
Budget: a typical message must validate in <= 8 us (the whole client budget is 60 us/message).
"""

from __future__ import annotations

import argparse
import timeit

from ccs.xmpp.message import build_message, validate_downstream

TOKEN = "bk3RNwTe3H0:CI2k_HHwgIpoDKCIZvvDMExUdFQ3P1" + "x" * 110  # ~152 chars like real tokens

TYPICAL = {
    "to": TOKEN,
    "message_id": "m-1366082849205",
    "priority": "high",
    "time_to_live": 3600,
    "data": {"score": "5x1", "time": "15:10", "user": "alice"},
    "notification": {"title": "FooCorp up 1.43%", "body": "FooCorp gained 11.80 points today"},
}
DATA_ONLY = {"to": TOKEN, "message_id": "m-2", "data": {"score": "5x1", "time": "15:10"}}
CONDITION = {
    "condition": "'stock-GOOG' in topics || 'industry-tech' in topics",
    "message_id": "m-3",
    "data": {"price": "835.67"},
}


def per_call_us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=50_000, help="calls per timing run (5 runs)")
    n = ap.parse_args().number
    typical = per_call_us(lambda: validate_downstream(TYPICAL), n)
    data_only = per_call_us(lambda: validate_downstream(DATA_ONLY), n)
    condition = per_call_us(lambda: validate_downstream(CONDITION), n)
    build = per_call_us(lambda: build_message(TOKEN, data={"a": "b"}, priority="high"), n)
    print(
        f"BENCH message_validate typical_us={typical:.2f} data_only_us={data_only:.2f} "
        f"condition_us={condition:.2f} build_us={build:.2f}"
    )


if __name__ == "__main__":
    main()
