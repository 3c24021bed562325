"""The `notify:` section refuses what cannot work, each with the line and what to write instead."""

from __future__ import annotations

import pytest

from ds01.config import parse_config_text
from ds01.config.loader import ConfigError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "notify:\n  channels: [terminal, sms]\n",
            "test.yaml:2:24: notify.channels[1]: expected one of terminal, banner, workspace,"
            " webhook, email; got 'sms'",
            id="an unknown channel",
        ),
        pytest.param(
            "notify:\n  channels: [webhook]\n",
            "test.yaml:2:13: notify.channels: channel 'webhook' needs notify.webhook.url (or"
            " url_file, a root-only file holding it)",
            id="a webhook channel without a URL",
        ),
        pytest.param(
            "notify:\n  channels: [email]\n",
            "test.yaml:2:13: notify.channels: channel 'email' needs notify.email.address (a"
            " template such as '{user}@lab.example') or notify.email.addresses (user: address)",
            id="an e-mail channel without addresses",
        ),
        pytest.param(
            "notify:\n  webhook:\n    url: hooks.slack.com/services/T0\n",
            "test.yaml:3:10: notify.webhook.url: expected an http:// or https:// URL, got"
            " 'hooks.slack.com/services/T0'",
            id="a URL without its scheme",
        ),
        pytest.param(
            "notify:\n  webhook:\n    url: https://a.example/x\n    url_file: /etc/ds01/url\n",
            "test.yaml:4:5: notify.webhook.url_file: give the webhook's url or its url_file,"
            " not both",
            id="both a URL and a URL file",
        ),
        pytest.param(
            "notify:\n  email:\n    address: '{name}@lab.example'\n",
            "test.yaml:3:14: notify.email.address: the only placeholder is {user}; got"
            " '{name}@lab.example'",
            id="an address template with another placeholder",
        ),
        pytest.param(
            'notify:\n  email:\n    addresses:\n      bob: "bob@lab.example\\nBcc: all"\n',
            "test.yaml:4:12: notify.email.addresses.bob: expected an address like"
            " someone@lab.example, got 'bob@lab.example\\nBcc: all'",
            id="an address that would write a mail header",
        ),
        pytest.param(
            "notify:\n  email:\n    smtp_port: 70000\n",
            "test.yaml:3:16: notify.email.smtp_port: must be a port number (1-65535), got 70000",
            id="a port out of range",
        ),
        pytest.param(
            "notify:\n  workspace:\n    file: ../../etc/motd\n",
            "test.yaml:3:11: notify.workspace.file: expected a plain file name like"
            " ds01-notices.txt, got '../../etc/motd'",
            id="a workspace file name with a directory part",
        ),
        pytest.param(
            "notify:\n  channels: [banner, banner]\n",
            "test.yaml:2:22: notify.channels[1]: 'banner' is listed twice (first at line 2)",
            id="a channel listed twice",
        ),
    ],
)
def test_a_malformed_notify_section_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, "test.yaml")
    assert message in [str(p) for p in caught.value.problems]


def test_the_defaults_are_terminal_banner_and_workspace() -> None:
    notify = parse_config_text("", "test.yaml").notify
    assert notify.channels == ("terminal", "banner", "workspace")
    assert (notify.banner.max_age, notify.workspace.file) == (86400, "ds01-notices.txt")
    assert (notify.webhook.url, notify.email.address, notify.queue_size) == (None, None, 256)
