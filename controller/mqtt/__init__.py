"""The MQTT link to dispatch. The only place paho-mqtt and aiomqtt are imported."""
