"""A simulated cabinet world: boards that speak real Modbus RTU/TCP, doors, parcels,
temperature, lane I/O and faults. Never imports :mod:`controller`."""
