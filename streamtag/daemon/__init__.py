"""The daemon: its configuration, its life cycle, its metrics and its shard."""
