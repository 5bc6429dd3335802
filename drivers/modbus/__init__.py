"""Modbus RTU/TCP backends: the line owner, board profiles, pure register maps."""
