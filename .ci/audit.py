"""Known vulnerabilities of the pinned install, from PyPI's own vulnerability data (what `pip-audit -s pypi` reads).

  python .ci/audit.py [constraints.txt]

pip-audit cannot run where only the package registry is reachable: it asks PyPI for each pinned *release*
(`/pypi/<name>/<version>/json`), and this project's registry mirror answers those with 404 (and osv.dev is not
reachable). The mirror does answer `/pypi/<name>/json`, whose `vulnerabilities` list is PyPI's advisory data
for the project's latest release. So: a pin that is the latest release is audited from that list; an older pin
is listed as not auditable here, with the latest version beside it. Exit 1 if any audited pin has a known
vulnerability, 0 otherwise (network errors are reported, not fatal: the audit informs, the tests decide).
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def latest(name: str) -> tuple[str | None, list[dict], str]:
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=30) as r:
            data = json.load(r)
    except Exception as e:  # noqa: BLE001 - any failure is reported per package
        return None, [], f"{type(e).__name__}: {e}"
    return data["info"]["version"], data.get("vulnerabilities") or [], ""


def main(path: str = "constraints.txt") -> int:
    with open(path, encoding="utf-8") as f:
        pins = {m[1]: m[2] for line in f if (m := PIN.match(line.strip()))}
    with ThreadPoolExecutor(16) as pool:
        found = dict(zip(pins, pool.map(latest, pins)))
    # torch==2.13.0 installs 2.13.0+cpu: compare without the local version label
    audited = {n: vulns for n, (ver, vulns, _) in found.items()
               if ver and ver.split("+")[0] == pins[n].split("+")[0]}
    older = {n: ver for n, (ver, _, _) in found.items() if ver and n not in audited}
    errors = {n: err for n, (ver, _, err) in found.items() if not ver}
    bad = {n: v for n, v in audited.items() if v}
    print(f"audit of {path}: {len(pins)} pins; {len(audited)} are their project's latest release and were audited "
          f"from PyPI's vulnerability data: {len(bad)} with a known vulnerability")
    for name, vulns in sorted(bad.items()):
        for v in vulns:
            print(f"  VULNERABLE {name}=={pins[name]}: {v.get('id')} {','.join(v.get('aliases', []))} "
                  f"fixed in {','.join(v.get('fixed_in', [])) or '?'}")
    if older:
        print(f"{len(older)} pins are older than their latest release; PyPI's per-release data is not reachable "
              "here, so they are not audited: " + ", ".join(f"{n}=={pins[n]} (latest {v})" for n, v in sorted(older.items())))
    if errors:
        print(f"{len(errors)} pins could not be looked up: " + "; ".join(f"{n}: {e}" for n, e in sorted(errors.items())))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
