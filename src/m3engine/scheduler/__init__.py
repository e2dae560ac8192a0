"""Admission, batch forming across requests, and the supervised worker that runs the backend."""

from m3engine.scheduler.admission import Admission, Permit
from m3engine.scheduler.scheduler import Scheduler, Timings

__all__ = ["Admission", "Permit", "Scheduler", "Timings"]
