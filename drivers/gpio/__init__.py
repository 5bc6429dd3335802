"""GPIO lines for lane I/O: one small abstraction, backends chosen by name."""
