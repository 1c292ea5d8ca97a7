"""Meter readings, consumption, days left, low-balance alerts (issue 15). Pure except `service.py`."""
