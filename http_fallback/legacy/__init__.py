"""Legacy GCM/FCM HTTP (retired by Google in June 2024): client, protocol core and emulator."""
