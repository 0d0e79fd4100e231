"""The CCS emulator: a TLS XMPP server on loopback that behaves as Google's CCS did."""

from ccs.xmpp.emulator.record import Record
from ccs.xmpp.emulator.server import CcsEmulator, ConnectionInfo
from ccs.xmpp.emulator.settings import Faults, Settings

__all__ = ["CcsEmulator", "ConnectionInfo", "Faults", "Record", "Settings"]
