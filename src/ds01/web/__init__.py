"""The web status page (issue 17 item 3; docs/web.md): a read-only view of the whole server that
ds01d serves on its own TCP listener — snapshot.py says what it shows, server.py how it is
served, page.html is the page."""
