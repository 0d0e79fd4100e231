"""C2DM (retired by Google in 2015), with node2dm's rules: client, protocol core and emulator."""
