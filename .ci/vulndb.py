#!/usr/bin/env python3
"""Builds a govulncheck database (v1 layout) from the OSV files of the
golang.org/x/vulndb module, which the Go module proxy serves: this machine
reaches no other source of vulnerability data.

usage: vulndb.py VULNDB_MODULE_DIR OUT_DIR
"""
import json, os, sys

src, out = sys.argv[1], sys.argv[2]
osv_dir = os.path.join(src, "data", "osv")
os.makedirs(os.path.join(out, "ID"), exist_ok=True)
os.makedirs(os.path.join(out, "index"), exist_ok=True)
modules, latest = {}, ""
for name in sorted(os.listdir(osv_dir)):
    if not name.endswith(".json"):
        continue
    with open(os.path.join(osv_dir, name)) as f:
        entry = json.load(f)
    with open(os.path.join(out, "ID", name), "w") as f:
        json.dump(entry, f)
    modified = entry.get("modified", "")
    latest = max(latest, modified)
    for aff in entry.get("affected", []):
        path = aff.get("package", {}).get("name")
        if not path:
            continue
        fixed = ""
        for r in aff.get("ranges", []):
            for ev in r.get("events", []):
                fixed = ev.get("fixed", fixed)
        vulns = modules.setdefault(path, {})
        vulns[entry["id"]] = {"id": entry["id"], "modified": modified, **({"fixed": fixed} if fixed else {})}
with open(os.path.join(out, "index", "db.json"), "w") as f:
    json.dump({"modified": latest}, f)
with open(os.path.join(out, "index", "modules.json"), "w") as f:
    json.dump([{"path": p, "vulns": list(v.values())} for p, v in sorted(modules.items())], f)
print(f"vulndb: {len(modules)} modules, latest change {latest}")
