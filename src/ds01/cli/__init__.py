"""The ds01 command line: thin Typer commands that parse, call, and render.

Heavy libraries (NVML, the Docker SDK, HTTP clients) are imported inside the commands that need
them, so `ds01 --help` stays fast.
"""
