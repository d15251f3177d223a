"""Runs that compose the task packages (detection, grading, reporting) over folders of photographs."""
