"""Starts moto's server mode on a loopback port for the local stack and the tests.

Binds 127.0.0.1 unless --host says otherwise (e.g. for `sam local invoke` containers).
Prints the port it bound on its first line of stdout, then serves until killed or until the
process named by --parent-pid exits.

moto serves requests on many threads without a lock around DynamoDB's condition checks, so two
concurrent conditional writes could both pass where real DynamoDB (linearizable per item) lets
only one through. DynamoDB requests are therefore serialized here; S3, SQS and EventBridge keep
their concurrency (SQS long polls must not block the table).
"""

import argparse
import os
import sys
import threading
import time

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import queries  # noqa: E402  (infra/moto/queries.py: moto 5.2.1 sorts the table per query)
import sqs  # noqa: E402  (infra/moto/sqs.py: moto 5.2.1's whole-queue scans)
import transactions  # noqa: E402  (infra/moto/transactions.py: moto 5.2.1's slow rollback)


class SerializeDynamoDB:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with self.lock:
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


class FixCompleteMultipartUpload:
    """moto 5.2.1 answers S3 CompleteMultipartUpload with the root element
    `CompleteMultipartUploadResponse`; S3 (and every SDK) uses `CompleteMultipartUploadResult`,
    so the Rust SDK cannot parse moto's answer although the upload completed. Written for
    moto 5.2.1 (pinned in infra/requirements.txt); drop it once moto answers as S3 does."""

    WRONG = b"CompleteMultipartUploadResponse"
    RIGHT = b"CompleteMultipartUploadResult"

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST" or "uploadId" not in environ.get("QUERY_STRING", ""):
            return self.app(environ, start_response)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        if self.WRONG in body:
            body = body.replace(self.WRONG, self.RIGHT)
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


def watch_parent(pid):
    while True:
        try:
            os.kill(pid, 0)
        except OSError:
            os._exit(0)
        time.sleep(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args()
    # Speed fixes for moto 5.2.1 (infra/moto/transactions.py, sqs.py, queries.py);
    # MOTO_SPEED_PATCHES=off runs moto as released, to measure the difference.
    if os.environ.get("MOTO_SPEED_PATCHES") != "off":
        transactions.install()
        sqs.install()
        queries.install()
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        args.host, args.port, FixCompleteMultipartUpload(SerializeDynamoDB(app)), threaded=True
    )
    os.environ["MOTO_PORT"] = str(server.server_port)
    print(server.server_port, flush=True)
    if args.parent_pid:
        threading.Thread(target=watch_parent, args=(args.parent_pid,), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
