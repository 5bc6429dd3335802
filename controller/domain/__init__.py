"""Pure domain rules: compartments, doors, codes, lockout, alarms. No I/O, no asyncio; time
comes from an injected clock.
"""
