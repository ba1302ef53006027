"""Baseline: Django's send_messages over one SMTP connection, as a Django project sends a newsletter.

Run by the harness (processes.ts, sendWithDjango) with a Python that imports Django. Reads one JSON
object on stdin: {"host", "port", "timeout", "messages": [{"from", "to", "subject", "text", "html",
"headers"}, ...]} (bench/newsletter.ts's fields), builds an EmailMultiAlternatives per message (text
body, html alternative, headers), then sends them all with ONE connection's send_messages (Django
opens it, sends one message after the other, closes it). Prints one JSON line: {"startedAt",
"finishedAt", "failed", "cpuMs"} (time.monotonic is CLOCK_MONOTONIC, the harness's clock, in ms).
"""

import json
import sys
import time

from django.conf import settings

request = json.load(sys.stdin)
settings.configure(
    EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
    EMAIL_HOST=request["host"],
    EMAIL_PORT=request["port"],
    EMAIL_TIMEOUT=request["timeout"],
)

from django.core.mail import EmailMultiAlternatives, get_connection  # noqa: E402 (needs the settings)
from django.core.mail.utils import DNS_NAME  # noqa: E402


def newsletter(fields):
    message = EmailMultiAlternatives(
        subject=fields["subject"],
        body=fields["text"],
        from_email=fields["from"],
        to=[fields["to"]],
        headers=fields["headers"],
    )
    message.attach_alternative(fields["html"], "text/html")
    return message


messages = [newsletter(fields) for fields in request["messages"]]
# Django caches the host's FQDN (EHLO name, Message-ID domain) on first use; resolving it here keeps a
# slow resolver out of the measured time.
DNS_NAME.get_fqdn()
connection = get_connection(fail_silently=False)
cpu = time.process_time()
started = time.monotonic()
sent = connection.send_messages(messages)
finished = time.monotonic()
print(
    json.dumps(
        {
            "startedAt": started * 1000,
            "finishedAt": finished * 1000,
            "failed": len(messages) - sent,
            "cpuMs": (time.process_time() - cpu) * 1000,
        }
    )
)
