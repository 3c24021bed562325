"""HTTP/JSON API on api.sock. The caller is whoever the kernel says is at the other end of the
socket (SO_PEERCRED); no request field can name another user."""
