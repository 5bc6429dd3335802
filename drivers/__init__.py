"""Hardware access for the locker controller: driver contracts, Modbus and GPIO backends,
and a fake backend. Never imports :mod:`controller`."""
