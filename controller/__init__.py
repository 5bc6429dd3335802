"""The locker controller daemon: domain rules, services, MQTT link, state store, settings."""

__version__ = "0.1.0"
