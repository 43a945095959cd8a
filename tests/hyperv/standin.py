#!/usr/bin/env python3
"""A stand-in for a Windows Hyper-V host reached over SSH, for snaptree's tests.

snaptree's Hyper-V driver runs

    ssh -o BatchMode=yes ... -l USER -- HOST "powershell -NoProfile -NonInteractive -Command -"

once per session, and feeds that PowerShell one script at a time on standard input, each
followed by a statement that writes its end marker. Tests point the driver at this program
instead (through a wrapper that adds --state-dir). It checks the ssh arguments, serves the
session until its input ends, and parses each script strictly -- the frame snaptree uses, then statements built only from cmdlets and
parameters that real Hyper-V has (Get-VM, Set-VM, Checkpoint-VM, Get-VMCheckpoint,
Restore-VMCheckpoint, Remove-VMCheckpoint, Start-VM, Get-VMHost) -- and refuses anything
else, so a test fails when the driver sends something Hyper-V would not run. PowerShell's
single-quoted literals are tokenised as PowerShell does: '' is one quote, the typographic
single quotes count as quotes too, and nothing else ($, backticks, ;, newlines) is special
inside them.

State (one JSON file per host under --state-dir) follows Hyper-V: checkpoint names need
not be unique; a new checkpoint hangs from the VM's current one; removing one merges it
and re-parents its children, or with -IncludeAllChildCheckpoints removes the subtree; a
VM holds at most 50 checkpoints; restoring a standard checkpoint taken while the VM ran
leaves it Saved, anything else leaves it Off. New VMs use production checkpoints, as
Hyper-V does since 2016, so a driver that forgets `Set-VM -CheckpointType Standard` gets
VMs that stay off after a restore. Error messages are worded as Hyper-V words them
(VM and checkpoint not found); the wording of the 50-checkpoint error is not documented
and is this program's own.

Test set-up, outside the ssh path:
    standin.py --state-dir DIR --host H --add-vm NAME [--vm-state Running|Off]
    standin.py --state-dir DIR --host H --add-checkpoint VM NAME
    standin.py --state-dir DIR --host H --dump VM
Sessions and failures, for tests to see and cause:
    DIR/H.sessions    gets a line for each session opened
    DIR/H.down        the host is unreachable: new sessions fail as ssh does (exit 255),
                      and an open one ends at its next script, as a dropped connection does
    DIR/H.crash       "WHEN [TEXT]": the session dies at its next script (that contains
                      TEXT), once (the file is removed): "before" it runs the script, or
                      "after" it ran it but before it answers
    DIR/H.hang        the session stops answering at its next script (sleeps until killed)
"""

import json
import os
import re
import sys
import time

MAX_CHECKPOINTS = 50
QUOTES = "'\u2018\u2019\u201a\u201b"
REMOTE_COMMAND = "powershell -NoProfile -NonInteractive -Command -"
SSH_OPTIONS = {"BatchMode", "ConnectTimeout", "ServerAliveInterval", "ServerAliveCountMax",
               "StrictHostKeyChecking", "UserKnownHostsFile"}

PRELUDE = "& {\n$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\ntry {\n"
EPILOGUE = ("} catch {\nWrite-Output ('SNAPTREE-ERROR ' + ($_.Exception.Message -replace '\\s+', ' '))\n"
            "}\n}\n\n")
# The statement after each script: Write-Output ('SNAPTREE-END ' + 'N.')
END = re.compile(r"^Write-Output \('SNAPTREE-END ' \+ '([0-9]+)\.'\)$")

# Statement shapes: each single-quoted literal is written {L}.
SHAPES = {
    "Set-VM -Name {L} -CheckpointType Standard": "set_standard",
    "$job = Checkpoint-VM -Name {L} -SnapshotName {L} -AsJob": "job_checkpoint",
    "$job = Restore-VMCheckpoint -VMName {L} -Name {L} -Confirm:$false -AsJob": "job_restore",
    "$job = Remove-VMCheckpoint -VMName {L} -Name {L} -Confirm:$false -AsJob": "job_remove",
    "$job = Remove-VMCheckpoint -VMName {L} -Name {L} -IncludeAllChildCheckpoints -Confirm:$false -AsJob": "job_remove_subtree",
    "while ($job.State -eq {L} -or $job.State -eq {L}) { $p = @($job.ChildJobs[0].Progress); if ($p.Count -gt 0) { Write-Output ({L} + $p[-1].PercentComplete) }; Start-Sleep -Milliseconds 500 }": "wait",
    "Receive-Job -Job $job -Wait -ErrorAction Stop | Out-Null": "receive",
    "Write-Output {L}": "write",
    "Start-VM -Name {L}": "start",
    "Write-Output ({L} + (ConvertTo-Json -Compress -Depth 3 -InputObject @{ current = (Get-VM -Name {L}).ParentSnapshotName; checkpoints = @(Get-VMCheckpoint -VMName {L} | ForEach-Object { @{ name = $_.Name; parent = $_.ParentSnapshotName } }) }))": "list",
    "Write-Output ({L} + (ConvertTo-Json -Compress -InputObject @{ state = [string](Get-VM -Name {L}).State }))": "state",
    "Write-Output ({L} + (ConvertTo-Json -Compress -InputObject @(Get-VM | ForEach-Object { @{ name = $_.Name; state = [string]$_.State } })))": "vms",
    "Write-Output ({L} + (ConvertTo-Json -Compress -InputObject @{ host = (Get-VMHost).Name }))": "host",
}


class HyperVError(Exception):
    """A terminating error, as the script's catch block would report it."""


class Refused(Exception):
    """Something real Hyper-V (or PowerShell) would not run as snaptree means it."""


def tokenize(body):
    """Splits the body into statements: (shape, [literal values])."""
    statements, shape, values, i = [], [], [], 0
    while i < len(body):
        c = body[i]
        if c in QUOTES:
            j, value = i + 1, []
            while True:
                if j >= len(body):
                    raise Refused("an unterminated string literal")
                if body[j] in QUOTES:
                    if j + 1 < len(body) and body[j + 1] in QUOTES:
                        value.append(body[j])
                        j += 2
                        continue
                    break
                value.append(body[j])
                j += 1
            shape.append("{L}")
            values.append("".join(value))
            i = j + 1
        elif c == "\n":
            if "".join(shape).strip():
                statements.append(("".join(shape).strip(), values))
            shape, values = [], []
            i += 1
        elif c in '"`':
            raise Refused(f"a {c!r} outside a single-quoted literal: values must be single-quoted")
        else:
            shape.append(c)
            i += 1
    if "".join(shape).strip():
        statements.append(("".join(shape).strip(), values))
    return statements


class Host:
    def __init__(self, path):
        self.path = path
        if os.path.exists(path):
            with open(path) as f:
                self.state = json.load(f)
        else:
            self.state = {"next_id": 1, "vms": {}}
        self.job = None
        self.out = []

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.path)

    def vm(self, name):
        if name not in self.state["vms"]:
            raise HyperVError(f'Hyper-V was unable to find a virtual machine with name "{name}".')
        return self.state["vms"][name]

    @staticmethod
    def by_name(vm, name):
        found = [k for k, c in vm["checkpoints"].items() if c["name"] == name]
        if not found:
            raise HyperVError("Unable to find a snapshot matching the given criteria.")
        return found

    def checkpoint(self, vm_name, name):
        vm = self.vm(vm_name)
        if len(vm["checkpoints"]) >= MAX_CHECKPOINTS:
            raise HyperVError(f"Checkpoint operation for '{vm_name}' failed. Cannot create more than "
                              f"{MAX_CHECKPOINTS} checkpoints for virtual machine '{vm_name}'.")
        cid = str(self.state["next_id"])
        self.state["next_id"] += 1
        vm["checkpoints"][cid] = {"name": name, "parent": vm["current"],
                                  "type": vm["checkpoint_type"], "vm_state": vm["state"]}
        vm["current"] = cid

    def restore(self, vm_name, name):
        vm = self.vm(vm_name)
        cid = self.by_name(vm, name)[0]
        c = vm["checkpoints"][cid]
        vm["current"] = cid
        vm["state"] = "Saved" if c["type"] == "Standard" and c["vm_state"] == "Running" else "Off"

    def remove(self, vm_name, name, subtree):
        vm = self.vm(vm_name)
        for cid in self.by_name(vm, name):
            if cid not in vm["checkpoints"]:
                continue
            parent = vm["checkpoints"][cid]["parent"]
            gone = [cid]
            if subtree:
                i = 0
                while i < len(gone):
                    gone += [k for k, c in vm["checkpoints"].items() if c["parent"] == gone[i]]
                    i += 1
            else:
                for c in vm["checkpoints"].values():
                    if c["parent"] == cid:
                        c["parent"] = parent
            for k in gone:
                del vm["checkpoints"][k]
            if vm["current"] in gone:
                vm["current"] = parent

    def listing(self, vm_name):
        vm = self.vm(vm_name)
        names = {k: c["name"] for k, c in vm["checkpoints"].items()}
        return {"current": names.get(vm["current"]),
                "checkpoints": [{"name": c["name"], "parent": names.get(c["parent"])}
                                for c in vm["checkpoints"].values()]}

    def run(self, kind, values):
        if kind == "set_standard":
            self.vm(values[0])["checkpoint_type"] = "Standard"
        elif kind.startswith("job_"):
            self.vm(values[0])  # the cmdlet itself fails at once for a missing VM
            self.job = (kind, values)
        elif kind == "wait":
            if values[:3] != ["NotStarted", "Running", "SNAPTREE-PROGRESS "] or self.job is None:
                raise Refused("a wait loop without a job")
            for pct in (0, 50, 100):
                self.out.append(f"SNAPTREE-PROGRESS {pct}")
        elif kind == "receive":
            if self.job is None:
                raise Refused("Receive-Job without a job")
            job, (vm_name, name) = self.job
            if job == "job_checkpoint":
                self.checkpoint(vm_name, name)
            elif job == "job_restore":
                self.restore(vm_name, name)
            else:
                self.remove(vm_name, name, job == "job_remove_subtree")
            self.job = None
        elif kind == "write":
            self.out.append(values[0])
        elif kind == "start":
            self.vm(values[0])["state"] = "Running"
        else:
            prefix, rest = values[0], values[1:]
            if prefix != "SNAPTREE-RESULT ":
                raise Refused(f"an unexpected output prefix {prefix!r}")
            if kind == "list":
                if rest[0] != rest[1]:
                    raise Refused("a listing of two different VMs")
                result = self.listing(rest[0])
            elif kind == "state":
                result = {"state": self.vm(rest[0])["state"]}
            elif kind == "vms":
                result = [{"name": n, "state": v["state"]} for n, v in self.state["vms"].items()]
            else:
                result = {"host": "HV-STANDIN"}
            self.out.append("SNAPTREE-RESULT " + json.dumps(result, separators=(",", ":")))


def new_vm(state):
    return {"state": state, "checkpoint_type": "Production", "current": None, "checkpoints": {}}


def parse_ssh(args):
    options, i = {}, 0
    while i < len(args):
        a = args[i]
        if a == "-o":
            key, _, value = args[i + 1].partition("=")
            if key not in SSH_OPTIONS:
                raise Refused(f"an ssh option this test host does not expect: {key}")
            options[key] = value
            i += 2
        elif a in ("-p", "-i", "-l"):
            options[a] = args[i + 1]
            i += 2
        elif a == "--":
            rest = args[i + 1:]
            if len(rest) != 2:
                raise Refused(f"ssh arguments after -- should be HOST COMMAND, not {rest!r}")
            return options, rest[0], rest[1]
        else:
            raise Refused(f"an unexpected ssh argument {a!r}")
    raise Refused("no -- before the host")


def serve(state_dir, args):
    try:
        options, host, command = parse_ssh(args)
        if options.get("BatchMode") != "yes":
            raise Refused("ssh without BatchMode=yes could stop to ask for a password")
        if "-l" not in options or command != REMOTE_COMMAND:
            raise Refused(f"unexpected user or remote command: {command!r}")
    except Refused as e:
        print(f"standin: refused: {e}", file=sys.stderr)
        return 2
    path = lambda suffix: os.path.join(state_dir, host + suffix)
    if os.path.exists(path(".down")):
        print(f"ssh: connect to host {host} port {options.get('-p', '22')}: Connection refused", file=sys.stderr)
        return 255
    with open(path(".sessions"), "a") as f:
        f.write(f"{os.getpid()}\n")
    script = []
    for line in sys.stdin:
        end = END.match(line.rstrip("\n"))
        if end is None:
            script.append(line)
            continue
        if os.path.exists(path(".down")):
            print(f"Connection to {host} closed by remote host.", file=sys.stderr)
            return 255
        if os.path.exists(path(".hang")):
            while True:
                time.sleep(3600)
        crash = None
        if os.path.exists(path(".crash")):
            with open(path(".crash")) as f:
                when, _, pattern = f.read().strip().partition(" ")
            if pattern in "".join(script):
                crash = when or "after"
                os.remove(path(".crash"))
            if crash == "before":
                os._exit(1)
        out = run_script(path(".json"), "".join(script))
        if crash == "after":
            os._exit(1)
        # PowerShell writes its output, then the end statement's.
        sys.stdout.write("".join(o + "\n" for o in out) + f"SNAPTREE-END {end.group(1)}.\n")
        sys.stdout.flush()
        script = []
    if "".join(script).strip():
        print("standin: refused: input ended inside a script", file=sys.stderr)
        return 2
    return 0


def run_script(state_path, script):
    """Runs one script against the host's state; returns the lines it writes."""
    hv = Host(state_path)
    try:
        if not script.startswith(PRELUDE) or not script.endswith(EPILOGUE):
            raise Refused("the script is not one & { try { ... } catch { ... } } block ending in a blank line")
        for shape, values in tokenize(script[len(PRELUDE):-len(EPILOGUE)]):
            kind = SHAPES.get(shape)
            if kind is None:
                raise Refused(f"a statement Hyper-V is not sent by snaptree: {shape}")
            hv.run(kind, values)
    except Refused as e:
        # As PowerShell reports what it cannot parse, and reads on.
        return [f"standin: refused: {e}"]
    except HyperVError as e:
        hv.out.append("SNAPTREE-ERROR " + re.sub(r"\s+", " ", str(e)))
        hv.save()  # what ran before the error stays done, as on a real host
        return hv.out
    hv.save()
    return hv.out


def admin(state_dir, args):
    host = args[args.index("--host") + 1]
    hv = Host(os.path.join(state_dir, host + ".json"))
    if "--add-vm" in args:
        name = args[args.index("--add-vm") + 1]
        state = args[args.index("--vm-state") + 1] if "--vm-state" in args else "Running"
        hv.state["vms"][name] = new_vm(state)
    elif "--add-checkpoint" in args:
        i = args.index("--add-checkpoint")
        hv.checkpoint(args[i + 1], args[i + 2])
    elif "--dump" in args:
        vm = hv.vm(args[args.index("--dump") + 1])
        out = hv.listing(args[args.index("--dump") + 1])
        out["state"] = vm["state"]
        print(json.dumps(out))
        return 0
    hv.save()
    return 0


def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--state-dir":
        print("usage: standin.py --state-dir DIR (SSH ARGS | --host H ...)", file=sys.stderr)
        return 2
    state_dir, rest = args[1], args[2:]
    os.makedirs(state_dir, exist_ok=True)
    if rest and rest[0] == "--host":
        return admin(state_dir, rest)
    return serve(state_dir, rest)


if __name__ == "__main__":
    sys.exit(main())
