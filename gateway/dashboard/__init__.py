"""The /dashboard page: a self-contained HTML file (inline JS drawing SVG) and the JSON it polls."""

from gateway.dashboard.data import dashboard_data
from gateway.dashboard.timeline import Sample, Timeline

__all__ = ["Sample", "Timeline", "dashboard_data"]
