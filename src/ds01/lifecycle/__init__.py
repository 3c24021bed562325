"""ds01.lifecycle: idle GPUs come back on their own and runtimes end on time (issue 15).

activity.py judges each unit from the daemon's latest sample, countdown.py decides warnings and
stops (both pure), messages.py words them, reclaim.py acts: notifier, audit events, and the
ContainerService stop path. Never signals a process itself, never resets a GPU.
"""
