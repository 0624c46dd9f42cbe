"""Reference values for the TypeScript Clopper-Pearson bound and incomplete beta, from scipy
(kept as test/fixtures/clopper-pearson.json; regenerate with scipy from python/requirements-train.txt).

    python -m bertgate_export.cp_reference OUT.json
"""

from __future__ import annotations

import json
import sys

from scipy.special import betainc
from scipy.stats import beta


def main(out: str) -> None:
    bounds = []
    for n in (1, 2, 10, 59, 100, 1000, 9155):
        for errors in sorted({0, 1, n // 20, n // 2, n - 1}):
            for delta in (0.01, 0.05, 0.1):
                upper = 1.0 if errors >= n else float(beta.ppf(1 - delta, errors + 1, n - errors))
                bounds.append({"errors": errors, "n": n, "delta": delta, "upper": upper})
    incomplete = [
        {"x": x, "a": a, "b": b, "value": float(betainc(a, b, x))}
        for x in (1e-6, 0.01, 0.3, 0.5, 0.9, 0.999)
        for a, b in ((0.5, 0.5), (1, 1), (2.5, 7), (30, 3), (500, 9000))
    ]
    with open(out, "w") as f:
        json.dump(
            {"source": "scipy.stats.beta.ppf, scipy.special.betainc", "bounds": bounds, "incomplete_beta": incomplete},
            f,
            indent=1,
        )
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
