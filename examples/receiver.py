#!/usr/bin/env python3
"""A callback receiver that verifies hookd's signatures and prints statuses.

Every callback is checked with the `standardwebhooks` library (the reference
implementation of the Standard Webhooks specification, `pip install
standardwebhooks`), not with hookd's own code. Each verified status change
is printed as one JSON line: {"task": ..., "status": ..., "webhook_id": ...}.

A repeated webhook-id (hookd delivers at least once) is answered 200 and not
printed again: that is what a receiver should do with webhook-id.

    python3 examples/receiver.py --port 8080 --secret whsec_...

--fail-first STATUS answers 500 to the first attempt of every callback with
that status, to show that hookd retries it and holds back the later
statuses of the same task until it is through.
"""

import argparse
import http.server
import json
import sys
import threading

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def make_handler(verifier, fail_first):
    seen = set()
    failed_once = set()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                payload = verifier.verify(body, headers)
            except WebhookVerificationError as error:
                print(json.dumps({"rejected": str(error)}), flush=True)
                return self.answer(401)

            webhook_id = headers["webhook-id"]
            with lock:
                if payload.get("status") == fail_first and webhook_id not in failed_once:
                    failed_once.add(webhook_id)
                    return self.answer(500)
                if webhook_id in seen:
                    return self.answer(200)
                seen.add(webhook_id)
                line = {"task": payload.get("id"), "status": payload.get("status"),
                        "webhook_id": webhook_id}
                print(json.dumps(line), flush=True)
            self.answer(200)

        def answer(self, code):
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--secret", required=True, help="the whsec_ secret shared with hookd")
    parser.add_argument("--fail-first", default=None, metavar="STATUS")
    args = parser.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port),
                                             make_handler(Webhook(args.secret), args.fail_first))
    print(json.dumps({"listening": server.server_address[1]}), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
