#!/usr/bin/python3
"""A minimal Amanda application (3.5 application API) for the test harness.

It backs up whatever a shell command writes to its stdout and feeds a restore to another
command's stdin; the commands come from application properties, so that tests can run
`maildump backup ... -o -` / `maildump restore -` (or anything else) inside real Amanda.
This is harness code, not the product: the shipped integration is `maildump amanda ...`.

Protocol (Amanda/Application.pm, Script_App.pm, amraw, ampgsql): the command is the first
argument, then --config --host --disk --device --level (repeated for a multi-estimate)
--index line --message line --record --target ..., then every property as --NAME VALUE.
backup: data on fd 1, messages on fd 3 ("| info", "? strange", "sendbackup: size KB",
"sendbackup: error [...]"), index lines on fd 4. Anything on stderr fails the dump (and a
restore or validate), so the commands' stderr is captured and turned into fd-3 messages.

Properties (all optional but backup-command):
  backup-command   run by /bin/sh with AMANDA_LEVEL, AMANDA_DEVICE, AMANDA_DISK,
                   AMANDA_RECORD (1 with --record) set; its stdout is the backup image
  estimate-command prints the image size in bytes for AMANDA_LEVEL (default: run
                   backup-command and count the bytes, as amraw does)
  restore-command  reads the image on stdin; AMANDA_LEVEL, AMANDA_TARGET set (default: cat > FILE)
  index-command    prints index lines for AMANDA_LEVEL after a backup (default: "/")
  check-command    run by selfcheck; exit 0 = OK
  raw-stderr       "yes": pass the backup command's stderr through to fd 2 (to show what
                   Amanda does with it)

Amanda 3.5.1's amfetchdump --extract and amcheckdump pass every property as the string
"HASH(0x...)" (a Perl bug; `--application-property NAME=VALUE` overrides one). Such values
are replaced from /etc/amanda/CONFIG/app-properties.json (written by amanda.sh setup).
"""
import json
import os
import re
import subprocess
import sys
import threading

CAPABILITIES = """CONFIG YES
HOST YES
DISK YES
MAX-LEVEL 9
INDEX-LINE YES
INDEX-XML NO
MESSAGE-LINE YES
MESSAGE-XML NO
RECORD YES
COLLECTION NO
MULTI-ESTIMATE YES
CALCSIZE NO
CLIENT-ESTIMATE YES
"""

FLAGS = {"record", "calcsize"}


def parse(argv):
    """(command, {option: [values]}) from Amanda's argument list."""
    cmd, opts, i = (argv[0] if argv else ""), {}, 1
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            i += 1
            continue
        name, eq, value = arg[2:].partition("=")
        name = name.lower().replace("_", "-")
        if not eq and name not in FLAGS:
            value = argv[i + 1] if i + 1 < len(argv) else ""
            i += 1
        opts.setdefault(name, []).append(value)
        i += 1
    return cmd, opts


def fix_properties(opts):
    """Replaces HASH(0x...) property values (see the module doc) from the config's file."""
    conf = one(opts, "config")
    path = f"/etc/amanda/{conf}/app-properties.json"
    if not conf or "/" in conf or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    for name, value in saved.items():
        got = opts.get(name)
        if got is None or re.fullmatch(r"HASH\(0x[0-9a-f]+\)", got[-1]):
            opts[name] = [value]


def one(opts, name, default=None):
    return opts.get(name, [default])[-1]


def env_for(opts, level):
    env = dict(os.environ)
    env["AMANDA_LEVEL"] = str(level)
    env["AMANDA_DEVICE"] = one(opts, "device") or one(opts, "disk") or ""
    env["AMANDA_DISK"] = one(opts, "disk") or ""
    env["AMANDA_RECORD"] = "1" if "record" in opts else "0"
    target = one(opts, "target") or one(opts, "directory")
    if target:
        env["AMANDA_TARGET"] = target
    return env


def lines_to(stream, out, prefix):
    """Copies each line of `stream` to `out` with `prefix` (a thread body)."""
    for raw in stream:
        text = raw.decode("utf-8", "replace").rstrip("\n")
        out.write(f"{prefix}{text}\n")
        out.flush()


def support(_opts):
    sys.stdout.write(CAPABILITIES)


def selfcheck(opts):
    device = one(opts, "device") or one(opts, "disk")
    print(f"OK amanda-app.py disk {one(opts, 'disk')}")
    if not one(opts, "backup-command"):
        print("ERROR property backup-command is not set")
    check = one(opts, "check-command")
    if check:
        res = subprocess.run(["/bin/sh", "-c", check], env=env_for(opts, 0),
                             capture_output=True, text=True, check=False)
        text = (res.stdout + res.stderr).strip().replace("\n", "; ")
        print(f"{'OK' if res.returncode == 0 else 'ERROR'} check-command: {text or 'exit 0'}"
              + ("" if res.returncode == 0 else f" (exit {res.returncode})"))
    elif device and not os.access(device, os.R_OK):
        print(f"ERROR {device} can't be read")


def estimate(opts):
    for level in opts.get("level", ["0"]):
        est = one(opts, "estimate-command")
        cmd = est or one(opts, "backup-command")
        proc = subprocess.Popen(["/bin/sh", "-c", cmd], env=env_for(opts, level),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate()
        if proc.returncode != 0:
            # An estimate failure: "-1 -1" tells the planner there is no estimate.
            print(f"{level} -1 -1")
            continue
        size = int(out.split()[0]) if est else len(out)
        print(f"{level} {max(size // 1024, 1)} 1")
        sys.stdout.flush()


def backup(opts):
    level = opts.get("level", ["0"])[0]
    mesg = os.fdopen(3, "w")
    index = os.fdopen(4, "w") if one(opts, "index") else None
    raw_stderr = (one(opts, "raw-stderr") or "").lower() == "yes"
    proc = subprocess.Popen(["/bin/sh", "-c", one(opts, "backup-command")],
                            env=env_for(opts, level), stdout=subprocess.PIPE,
                            stderr=None if raw_stderr else subprocess.PIPE)
    errs = None
    if not raw_stderr:
        errs = threading.Thread(target=lines_to, args=(proc.stderr, mesg, "? "))
        errs.start()
    size = 0
    out = sys.stdout.buffer
    while True:
        chunk = proc.stdout.read(1 << 16)
        if not chunk:
            break
        out.write(chunk)
        size += len(chunk)
    out.flush()
    os.close(1)
    rc = proc.wait()
    if errs:
        errs.join()
    if rc != 0:
        mesg.write(f"sendbackup: error [backup-command exited with {rc}]\n")
        mesg.flush()
        sys.exit(1)
    if index:
        idx = one(opts, "index-command")
        if idx:
            res = subprocess.run(["/bin/sh", "-c", idx], env=env_for(opts, level),
                                 capture_output=True, check=False)
            index.write(res.stdout.decode("utf-8", "replace"))
            for line in res.stderr.decode("utf-8", "replace").splitlines():
                mesg.write(f"? index-command: {line}\n")
        else:
            index.write("/\n")
        index.close()
    mesg.write(f"| backup-command wrote {size} bytes at level {level}\n")
    mesg.write(f"sendbackup: size {max(size // 1024, 1)}\n")
    mesg.flush()


def restore(opts):
    level = opts.get("level", ["0"])[0]
    cmd = one(opts, "restore-command") or "cat > amanda-app-restored"
    env = env_for(opts, level)
    target = env.get("AMANDA_TARGET")
    if target:
        os.chdir(target)
    res = subprocess.run(["/bin/sh", "-c", cmd], env=env, stdin=sys.stdin.buffer,
                         capture_output=True, check=False)
    sys.stdout.buffer.write(res.stdout + res.stderr)
    if res.returncode != 0:
        # On stderr on purpose: Amanda's restore reports it and fails.
        sys.stderr.write(f"restore-command exited with {res.returncode}\n")
        sys.exit(1)


def drain_stdin():
    while sys.stdin.buffer.read(1 << 16):
        pass


def validate(opts):
    cmd = one(opts, "validate-command")
    if not cmd:
        drain_stdin()
        return
    res = subprocess.run(["/bin/sh", "-c", cmd], env=env_for(opts, 0), stdin=sys.stdin.buffer,
                         check=False)
    sys.exit(0 if res.returncode == 0 else 1)


def index_cmd(_opts):
    drain_stdin()
    print("/")


COMMANDS = {"support": support, "selfcheck": selfcheck, "estimate": estimate,
            "backup": backup, "restore": restore, "validate": validate, "index": index_cmd}


def main():
    cmd, opts = parse(sys.argv[1:])
    fix_properties(opts)
    func = COMMANDS.get(cmd.lower().replace("-", "_"))
    if func is None:
        sys.stderr.write(f"Unknown command `{cmd}'.\n")
        sys.exit(1)
    func(opts)


if __name__ == "__main__":
    main()
