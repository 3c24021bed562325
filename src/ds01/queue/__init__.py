"""The queue's pure decisions (issue 16): priority with fair share. No I/O: services/queue.py
reads the database and the clock and passes plain values in."""
