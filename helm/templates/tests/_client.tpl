{{/*
Python shared by the gymserve-image test pods: HTTP calls with the standard library (the image has no
curl) and the create-reset-step-delete round trip. Plain Python with single braces: no template syntax.
*/}}
{{- define "gymserve.tests.pyclient" -}}
import json
import os
import sys
import time
import urllib.error
import urllib.request


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get("GYMSERVE_API_KEY"):  # a farm with tenants
        headers["Authorization"] = "Bearer " + os.environ["GYMSERVE_API_KEY"]
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def expect(answer, status, what):
    if answer[0] != status:
        sys.exit(f"FAIL {what}: expected {status}, got {answer[0]} {answer[1][:300]!r}")
    print(f"ok   {what}: {status}", flush=True)
    return json.loads(answer[1]) if answer[1].startswith(b"{") else answer[1]


def wait_ready(base, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            if call(base, "GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"FAIL {base}/readyz did not answer 200 within {seconds} s")
        time.sleep(0.5)


def round_trip(base, env_id, node_prefix):
    """Create, reset, step, delete one env; return the node that held it."""
    iid = expect(call(base, "POST", "/v1/envs/", {"env_id": env_id}), 200, f"create {env_id}")["instance_id"]
    node = iid.split(".", 1)[0]
    if not node.startswith(node_prefix):
        sys.exit(f"FAIL instance id {iid} does not name one of the pods {node_prefix}*")
    expect(call(base, "POST", f"/v1/envs/{iid}/reset/", {"seed": 7}), 200, "reset")
    action = expect(call(base, "GET", f"/v1/envs/{iid}/action_space/sample/"), 200, "sample an action")["action"]
    step = expect(call(base, "POST", f"/v1/envs/{iid}/step/", {"action": action}), 200, "step")
    if "observation" not in step:
        sys.exit(f"FAIL step answer without an observation: {step}")
    expect(call(base, "DELETE", f"/v1/envs/{iid}/"), 200, "delete")
    expect(call(base, "GET", f"/v1/envs/{iid}/"), 400, "the deleted env is unknown")
    return node
{{- end -}}
