"""The CCS emulator: a TLS XMPP server on loopback that behaves as Google's CCS did."""

from ccs.emulator.record import Record
from ccs.emulator.server import CcsEmulator, ConnectionInfo
from ccs.emulator.settings import Faults, Settings

__all__ = ["CcsEmulator", "ConnectionInfo", "Faults", "Record", "Settings"]
