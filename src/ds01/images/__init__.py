"""Images from framework templates (`ds01 image …`): names, package checks, the Dockerfile ds01
writes for a user, and where it is kept. Pure text and files: the build itself goes through the
user's Docker access (runtime/userdocker.py), never root's engine."""
