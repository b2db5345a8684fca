"""Northbound: what the node hands to the plant's other systems (PostgreSQL history, Sparkplug B)."""
