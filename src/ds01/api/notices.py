"""Banner notices handed to the caller's own `ds01` command (notify.channels: banner).

A request that carries `X-Ds01-Notices: 1` (the ds01 command line sends it; scripts and other
clients do not, so they never take anyone's notices) gets the caller's waiting notices in the
same header of its answer, whatever the answer, and they are gone from ds01d: shown once. The
caller is the socket peer's identity (the identity middleware, SO_PEERCRED), so nobody can
read another user's notices. A caller with none waiting costs one set lookup (BannerBox keeps
the set in memory); nothing is read from the database for them.
"""

from __future__ import annotations

from aiohttp import web

from ds01.api.http import CALLER, off_loop
from ds01.identity import Caller
from ds01.notices import HEADER, encode
from ds01.services.banners import BannerBox

BOX = web.AppKey("banners", BannerBox)


def install(app: web.Application, box: BannerBox) -> None:
    """Hand out notices on every answer of `app` (before it is started)."""
    app[BOX] = box
    app.on_response_prepare.append(_hand_out)


async def _hand_out(request: web.Request, response: web.StreamResponse) -> None:
    if request.headers.get(HEADER) != "1":
        return
    caller = request.get(CALLER)
    if not isinstance(caller, Caller):
        return  # refused before the caller was known: nothing of anyone's is sent
    box = request.config_dict[BOX]
    if not box.waiting(caller.name):
        return
    notices = await off_loop(box.take, caller.name)
    if notices:
        response.headers[HEADER] = encode(notices)
