"""The e-mail channel: one message per notice over SMTP (the standard library's smtplib).

Owns the user's address (notify.email.addresses, else the notify.email.address template with
{user}), the message (headers built by the email package, which refuses a CR or LF in a header:
no name can write headers) and the session: plain, STARTTLS or TLS with the system's CA
certificates, an optional login whose password is read from a root-only file when sending.
Must not run on an enforcing thread (the notifier's outbox calls it) and must not retry.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ds01.config.schema import EmailSettings

# Characters that never belong in an address made from a user name.
_BAD = set(' \t\r\n<>()[],;:"\\')


class MailError(Exception):
    """The mail was not handed to the SMTP server (why)."""


def address_of(user: str, settings: EmailSettings) -> str | None:
    """The user's address, or None when the config gives none that is valid for this name."""
    if user in settings.addresses:
        return settings.addresses[user]
    if settings.address is None:
        return None
    made = settings.address.replace("{user}", user)
    local, at, domain = made.rpartition("@")
    if not at or not local or not domain or "@" in local or _BAD & set(made):
        return None  # e.g. an LDAP name with its own '@' in a '{user}@…' template
    if any(ord(c) < 32 or c == "\x7f" for c in made):
        return None
    return made


def message_of(sender: str, to: str, topic: str, text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"ds01: {topic.replace('_', ' ')}"
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg.set_content(text.strip() + "\n")
    return msg


def send(settings: EmailSettings, msg: EmailMessage) -> None:
    """Hand the message to the SMTP server; MailError with why when it is not taken."""
    t = float(settings.timeout)
    try:
        if settings.security == "tls":
            ctx = ssl.create_default_context()
            session: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=t, context=ctx
            )
        else:
            session = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=t)
        with session:
            if settings.security == "starttls":
                session.starttls(context=ssl.create_default_context())
            if settings.username:
                session.login(settings.username, _password(settings))
            refused = session.send_message(msg)
    except (smtplib.SMTPException, OSError) as e:
        raise MailError(f"{settings.smtp_host}:{settings.smtp_port}: {_why(e)}") from None
    if refused:
        raise MailError(f"the server refused {', '.join(refused)}")


def _password(settings: EmailSettings) -> str:
    if settings.password_file is None:
        raise MailError("notify.email.username is set but password_file is not")
    try:
        return settings.password_file.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise MailError(f"cannot read notify.email.password_file: {e.strerror or e}") from None


def _why(e: Exception) -> str:
    if isinstance(e, TimeoutError):
        return "no answer in time"
    if isinstance(e, smtplib.SMTPResponseException):
        err = e.smtp_error
        text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
        return f"{e.smtp_code} {text}"
    return f"{type(e).__name__}: {e}"
