"""``python -m controller.daemon``: the daemon, as ``locker-controller`` runs it."""

import sys

from controller.daemon.main import main

sys.exit(main())
