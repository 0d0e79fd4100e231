"""The APNs binary interface (retired by Apple on 31 March 2021) and its feedback service."""
