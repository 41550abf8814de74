"""moto's server (as `moto_server -H HOST -p PORT`), with DynamoDB requests applied one at a time.

DynamoDB applies a conditional write atomically; moto's threaded server does not (two racing
UpdateItem calls with the same condition can both succeed), which made the store's
"racing updates: one wins" contract test fail now and then. Serializing DynamoDB requests
gives the emulator the guarantee the real service has; every other service stays concurrent
(long polls must not block each other). Run with the venv's Python: scripts/moto-server.
"""
import argparse
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto_server
    dynamodb = threading.Lock()

    def serialized(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with dynamodb:
                # The whole response is produced inside the lock.
                return list(app(environ, start_response))
        return app(environ, start_response)

    run_simple(args.host, args.port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
