"""Services: the poller, the unlock queue, command handling; they join domain, drivers, store
and MQTT.
"""
