"""The release, one number for the service, its clients, the chart and the Node example (a test checks)."""

__version__ = "0.2.0"
