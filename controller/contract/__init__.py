"""The MQTT contract as value objects: topics and payload models, checked without a broker."""
