"""Verifies the DKIM signature of one message with dkimpy (Debian's python3-dkim), for mailroom's tests.

Usage: /usr/bin/python3 dkim-verify.py --domain D --selector S --public-key P [--key-type rsa] [FILE]

Reads the message from FILE, or from stdin when FILE is absent or `-`, as bytes. The public key
record is never looked up in DNS: a stub dnsfunc answers `v=DKIM1; k=<key-type>; p=<P>` for
`<S>._domainkey.<D>.` and nothing for any other name. Verifies the first DKIM-Signature with
dkim.verify() and prints one JSON object on stdout:

  {"verified": bool, "queries": [names asked], "signature": {tag: value} or null,
   "headers": [h= field names, lower case], "log": [dkimpy's log lines, why it failed]}

Exits 0 whatever the verdict (the caller asserts on "verified"); 2 for bad arguments.
"""

import argparse
import json
import logging
import sys

import dkim
from dkim.util import parse_tag_value


class Collect(logging.Handler):
    """Keeps dkimpy's log lines: the reason a signature did not verify."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def first_signature(message):
    """The tags of the first DKIM-Signature header field, or None."""
    d = dkim.DKIM(message)
    for name, value in d.headers:
        if name.lower() == b"dkim-signature":
            return {k.decode(): v.decode("latin1") for k, v in parse_tag_value(value).items()}
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", required=True)
    parser.add_argument("--selector", required=True)
    parser.add_argument("--public-key", required=True, help="base64 of the DER SubjectPublicKeyInfo (the p= tag)")
    parser.add_argument("--key-type", default="rsa")
    parser.add_argument("file", nargs="?", default="-")
    args = parser.parse_args()

    if args.file == "-":
        message = sys.stdin.buffer.read()
    else:
        with open(args.file, "rb") as f:
            message = f.read()

    published = "{}._domainkey.{}.".format(args.selector, args.domain).encode()
    record = "v=DKIM1; k={}; p={}".format(args.key_type, args.public_key).encode()
    queries = []

    def dnsfunc(name, timeout=5):
        queries.append(name.decode("latin1"))
        return record if name == published else None

    collect = Collect()
    logger = logging.getLogger("dkim-verify")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collect)

    verified = dkim.verify(message, logger=logger, dnsfunc=dnsfunc)
    signature = first_signature(message)
    headers = []
    if signature and "h" in signature:
        headers = [name.strip().lower() for name in "".join(signature["h"].split()).split(":")]
    json.dump(
        {
            "verified": bool(verified),
            "queries": queries,
            "signature": signature,
            "headers": headers,
            "log": collect.lines,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
