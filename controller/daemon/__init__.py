"""The daemon, ``locker-controller``: the composition root and its start-up.

- :mod:`controller.daemon.app`: :class:`Daemon`, which builds every part from the settings,
  runs the supervised tasks and shuts down (the start-up order is written there);
- :mod:`controller.daemon.startup`: the steps between opening the parts and running them
  (configuration overlay, interrupted commands, reconciliation with the sensors);
- :mod:`controller.daemon.messages`: the ``status``, ``state`` and ``telemetry`` messages;
- :mod:`controller.daemon.main`: the command line, signals, the shutdown deadline.
"""

from controller.daemon.app import Daemon
from controller.daemon.main import main

__all__ = ["Daemon", "main"]
