"""The outside world of a booting VM, inside the test's network namespace: the EC2 instance
metadata service (IMDSv2) on 169.254.169.254:80, and the Stratus API's agent route on
127.0.0.1:8080 serving the "agent" (a script that records how it was started).

Usage: fake.py <folder with agent.sh> <token> <launch index>
"""
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FOLDER, TOKEN, INDEX = sys.argv[1], sys.argv[2], sys.argv[3]
IMDS_TOKEN = "imds-session-token"


class Imds(BaseHTTPRequestHandler):
    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.answer(200, IMDS_TOKEN)
        self.answer(400, "bad token request")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != IMDS_TOKEN:
            return self.answer(401, "IMDSv2 token required")
        if self.path == "/latest/meta-data/ami-launch-index":
            return self.answer(200, INDEX)
        self.answer(404, "not found")

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Api(Imds):
    def do_GET(self):
        if self.path == "/ready":
            return self.answer(200, "ok")
        if self.path.startswith("/agent/v1/jobs/") and self.path.endswith("/agent"):
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.answer(401, "bad token")
            with open(f"{FOLDER}/agent.sh") as f:
                return self.answer(200, f.read())
        self.answer(404, "not found")


servers = [ThreadingHTTPServer(("169.254.169.254", 80), Imds), ThreadingHTTPServer(("127.0.0.1", 8080), Api)]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
