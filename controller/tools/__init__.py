"""The programs that drive the daemon: ``lockerctl`` and its commands (status, watch, cmd,
commission, bus, keygen, config, demo) and how they show what they see."""
