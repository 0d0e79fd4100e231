"""Examples of ccs-gateway embedded in apps (not part of the installed package)."""
