"""Regenerate grafana/dashboards/*.json from the Python definitions (streamotion.dashboards).

.venv/bin/python grafana/generate.py           # write the JSON files
.venv/bin/python grafana/generate.py --check   # exit 1 when a committed file is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from streamotion.dashboards.build import check, write

HERE = Path(__file__).resolve().parent / "dashboards"

if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        stale = check(HERE)
        if stale:
            print(f"stale dashboards (run python grafana/generate.py): {', '.join(stale)}", file=sys.stderr)
            sys.exit(1)
        print("dashboards up to date")
    else:
        for path in write(HERE):
            print(path)
