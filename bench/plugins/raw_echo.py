"""A plugin with no SDK: reads one request line, answers with the cursor it got, exits."""

import json
import sys

request = json.loads(sys.stdin.readline())
params = request["params"]
reply = {
    "jsonrpc": "2.0",
    "id": request["id"],
    "result": {"next_cursor": params["cursor"], "events": []},
}
sys.stdout.write(json.dumps(reply) + "\n")
