"""Cabinet settings: one TOML file, layered defaults < file < environment < flags, frozen after
load.
"""
