"""Microsoft MPNS (Windows Phone; switched off around 2018): client, protocol core, emulator."""
