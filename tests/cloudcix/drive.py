"""Drives a snaptree server with CloudCIX's own Python client (the `cloudcix` package
from PyPI, unmodified, pinned in requirements.txt) and checks every answer against
CloudCIX's REST contract (shared/reference/cloudcix-rest.md).

Test plumbing only: `iaas.snaptree.test` resolves to 127.0.0.1 in this process.

Environment: SNAPTREE_PORT, SNAPTREE_TOKEN (an OPERATOR of the VM's project),
SNAPTREE_VIEWER (a VIEWER of it), SNAPTREE_VM (the VM's id), SNAPTREE_OTHER_SNAPSHOT (a
snapshot of another project). Exits 0 when every check holds.
"""

import datetime
import os
import socket
import sys
import time

os.environ["CLOUDCIX_SETTINGS_MODULE"] = "snaptree_settings"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_resolve = socket.getaddrinfo


def _loopback(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith("snaptree.test"):
        host = "127.0.0.1"
    return _resolve(host, *args, **kwargs)


socket.getaddrinfo = _loopback

from cloudcix.api.iaas import IAAS  # noqa: E402

TOKEN = os.environ["SNAPTREE_TOKEN"]
VIEWER = os.environ["SNAPTREE_VIEWER"]
VM = int(os.environ["SNAPTREE_VM"])
OTHER = int(os.environ["SNAPTREE_OTHER_SNAPSHOT"])
RUNNING, RUNNING_UPDATE, SCRUB, CLOSED = 4, 10, 8, 99


def check(condition, what, answer=None):
    if not condition:
        detail = "" if answer is None else f": {answer.status_code} {answer.text}"
        sys.exit(f"FAILED: {what}{detail}")
    print(f"ok: {what}")


def content(answer, status, what):
    check(answer.status_code == status, f"{what} is {status}", answer)
    body = answer.json()
    check(set(body) <= {"content", "_metadata"}, f"{what}: only content (and _metadata)", answer)
    return body["content"]


def snapshot_shape(s, what):
    for key in ("id", "name", "state", "active", "remove_subtree", "parent_id", "created",
                "updated", "uri", "history", "vm"):
        check(key in s, f"{what} has {key}")
    check(isinstance(s["id"], int) and isinstance(s["state"], int), f"{what}: integer id and state")
    check(isinstance(s["active"], bool) and isinstance(s["remove_subtree"], bool),
          f"{what}: JSON booleans")
    # The client's decoder turns CloudCIX's naive timestamps into datetimes.
    check(isinstance(s["created"], datetime.datetime) and s["created"].tzinfo is None,
          f"{what}: a naive timestamp")
    check(s["uri"] == f"/snapshot/{s['id']}/", f"{what}: its uri")
    check(s["vm"]["id"] == VM, f"{what}: its VM")


def wait(pk, state):
    for _ in range(3000):
        answer = IAAS.snapshot.read(token=TOKEN, pk=pk)
        if answer.status_code == 200 and answer.json()["content"]["state"] == state:
            return answer.json()["content"]
        time.sleep(0.02)
    sys.exit(f"FAILED: snapshot {pk} never reached state {state}")


def create(name):
    s = content(IAAS.snapshot.create(token=TOKEN, data={"vm_id": VM, "name": name}), 201,
                f"create {name}")
    snapshot_shape(s, f"created {name}")
    check(s["active"] is True and s["state"] in (1, 2), f"{name} is active and on its way")
    return wait(s["id"], RUNNING)


def active_id():
    listed = IAAS.snapshot.get_all(token=TOKEN, params={"search[vm_id]": VM, "search[active]": True})
    check(len(listed) == 1, "one active snapshot")
    return listed[0]["id"]


# Create: a root and a chain.
root = create("before-upgrade")
child = create("after-upgrade")
check(child["parent_id"] == root["id"], "a new snapshot hangs under the active one")
grandchild = create("patched")

# Read, and HEAD.
read = content(IAAS.snapshot.read(token=TOKEN, pk=root["id"]), 200, "read")
snapshot_shape(read, "read")
check(read["emails"] == [], "read has emails")
check([h["state"] for h in read["history"]] == [1, 2, 4], "history REQUESTED, BUILDING, RUNNING")
head = IAAS.snapshot.head(token=TOKEN, pk=root["id"])
check(head.status_code == 200 and not head.content, "HEAD is 200 without a body", head)

# List, with filters, an exclude, order and pages.
answer = IAAS.snapshot.list(token=TOKEN, params={"search[vm_id]": VM, "exclude[state]": CLOSED,
                                                  "order": "-id", "limit": 2})
page = content(answer, 200, "list")
meta = answer.json()["_metadata"]
check([s["id"] for s in page] == [grandchild["id"], child["id"]], "newest first, two a page")
check(meta["total_records"] == 3 and meta["limit"] == 2 and meta["page"] == 0
      and meta["order"] == "-id" and meta["warnings"] == [], "the page's _metadata")
everything = IAAS.snapshot.get_all(token=TOKEN, params={"search[vm_id]": VM})
check(len(everything) == 3, "get_all pages through the list")
named = IAAS.snapshot.list(token=TOKEN, params={"search[name__icontains]": "UPGRADE",
                                                "search[id__in]": [root["id"], child["id"], grandchild["id"]]})
check(sorted(s["id"] for s in content(named, 200, "filtered list")) == [root["id"], child["id"]],
      "icontains and in (as the client encodes a list)")
warned = IAAS.snapshot.list(token=TOKEN, params={"search[colour]": "red"})
check(len(warned.json()["_metadata"]["warnings"]) == 1, "an unknown filter is a warning")

# Apply an older snapshot, then revert to it (the same update on the active one).
applied = content(IAAS.snapshot.partial_update(token=TOKEN, pk=root["id"],
                                               data={"state": RUNNING_UPDATE}), 200, "apply")
check(applied["active"] is True, "an applied snapshot is active at once")
wait(root["id"], RUNNING)
check(active_id() == root["id"], "the VM runs from the applied snapshot")
content(IAAS.snapshot.update(token=TOKEN, pk=root["id"], data={"state": RUNNING_UPDATE}), 200,
        "revert")
wait(root["id"], RUNNING)
check(active_id() == root["id"], "a revert keeps the active snapshot")

# The tree: one branch, each node with its children.
tree = content(IAAS.snapshot_tree.list(token=TOKEN, vm_id=VM), 200, "tree")
branches = tree["branches"]
check(len(branches) == 1 and branches[0]["id"] == root["id"], "one branch from the root")
check(branches[0]["children"][0]["id"] == child["id"], "the child under the root")
check(branches[0]["children"][0]["children"][0]["id"] == grandchild["id"], "the grandchild")

# Delete one: its children move up.
content(IAAS.snapshot.partial_update(token=TOKEN, pk=child["id"], data={"state": SCRUB}), 200,
        "delete one")
wait(child["id"], CLOSED)
moved = content(IAAS.snapshot.read(token=TOKEN, pk=grandchild["id"]), 200, "read moved")
check(moved["parent_id"] == root["id"], "the deleted snapshot's child moved up")

# Delete a subtree: the root and everything under it.
extra = create("extra")
content(IAAS.snapshot.update(token=TOKEN, pk=root["id"],
                             data={"state": SCRUB, "remove_subtree": True}), 200, "delete subtree")
for pk in (root["id"], grandchild["id"], extra["id"]):
    wait(pk, CLOSED)
tree = content(IAAS.snapshot_tree.list(token=TOKEN, vm_id=VM), 200, "tree after")
check(tree["branches"] == [], "nothing left in the tree")

# History of one snapshot, as CloudCIX lists it.
history = IAAS.snapshot_history.get_all(token=TOKEN, params={"search[snapshot_id]": root["id"]})
states = [h["state"] for h in history]
check(states[:3] == [1, 2, 4] and states[-1] == CLOSED, f"the root's history {states}")
check(all(h["snapshot_id"] == root["id"] and h["vm_id"] == VM for h in history), "history rows")

# One error of each kind.
answer = IAAS.snapshot.list(token=None)
check(answer.status_code == 401 and answer.headers.get("WWW-Authenticate") == "X-Auth-Token",
      "no token: 401 naming the header", answer)
answer = IAAS.snapshot.create(token=TOKEN, data={"vm_id": VM, "name": "  "})
check(answer.status_code == 400 and answer.json()["errors"]["name"]["error_code"]
      == "iaas_snapshot_create_106", "a blank name: a field error", answer)
answer = IAAS.snapshot.create(token=TOKEN, data={"name": "x"})
check(answer.json()["errors"]["vm_id"]["error_code"] == "iaas_snapshot_create_101",
      "no vm_id: create_101", answer)
answer = IAAS.snapshot.read(token=TOKEN, pk=OTHER)
check(answer.status_code == 404 and answer.json()["error_code"] == "iaas_snapshot_read_001",
      "another project's snapshot does not exist", answer)
answer = IAAS.snapshot.partial_update(token=TOKEN, pk=10**12, data={"state": SCRUB})
check(answer.status_code == 404 and answer.json()["error_code"] == "iaas_snapshot_update_001",
      "no such snapshot: update_001", answer)
answer = IAAS.snapshot.partial_update(token=TOKEN, pk=root["id"], data={"state": "ten"})
check(answer.json()["errors"]["state"]["error_code"] == "iaas_snapshot_update_103",
      "a state that is not an integer: update_103", answer)
answer = IAAS.snapshot.create(token=VIEWER, data={"vm_id": VM, "name": "x"})
check(answer.status_code == 403 and answer.json()["error_code"] == "iaas_snapshot_create_202",
      "a VIEWER may not create: create_202", answer)
answer = IAAS.snapshot.list(token=TOKEN, params={"search[id]": "abc"})
check(answer.status_code == 400 and answer.json()["error_code"] == "iaas_snapshot_list_001",
      "a filter value the field cannot hold: list_001", answer)
answer = IAAS.snapshot.delete(token=TOKEN, pk=grandchild["id"])
check(answer.status_code == 405, "DELETE is not a method here", answer)
answer = IAAS.snapshot_tree.list(token=TOKEN, vm_id=10**12)
check(answer.status_code == 404 and answer.json()["error_code"] == "iaas_snapshot_tree_read_001",
      "no such VM: tree_read_001", answer)
print("all checks hold")
