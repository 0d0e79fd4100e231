"""The admin API: HTTP on 127.0.0.1 with a bearer token, its event stream and /metrics."""
