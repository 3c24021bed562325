"""Frozen value types shared by every part of ds01. Imports only ds01.errors.

Import from the submodules (ds01.model.gpueq, .inventory, .limits, .profile, .allocation,
.events): this package imports none of them, so a command that needs one value type (the
quick path of `ds01`, cli/quick.py) does not pay for all of them."""
