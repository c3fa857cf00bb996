"""Use cases and the ports they declare (ports.py); plans/ are the strategies, measure.py the bakes."""
