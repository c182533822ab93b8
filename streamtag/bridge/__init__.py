"""Bridges from the feed to what other programs speak: each a consumer of the feed, like the
recorder, never inside the daemon. mqtt.py turns the feed into retained MQTT topics, one tree
per station (docs/bridges.md); the command is streamtag.commands.bridge.
"""
