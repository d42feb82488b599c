"""The report's compute-optimal section: N*(C) ∝ C^a, D*(C) ∝ C^b three ways, side by side per target.

`frontier_section(doc, rows, loss_field, points_set)` reads the headline setting's law fits
(`doc.facts["fits"]`: parameters and bootstrap intervals, whose derived `N_opt_exponent` /
`D_opt_exponent` are a = β/(α+β), b = α/(α+β)) and computes the isoFLOP (approach 2) and envelope
(approach 1) exponents from the runs' points (`compute_optimal`; WSD trunks are read at common
FLOP budgets). An approach the runs cannot give is listed with the reason; two approaches whose
95% intervals do not overlap are flagged. Facts: doc.facts["compute_optimal"][target][approach].
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from atlas_t5x.scaling import compute_optimal as cop


def _ci(lo_hi: Sequence[float] | None) -> str:
    return f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "–"


def parametric_from_facts(fit: Mapping[str, Any]) -> dict[str, Any]:
    """A report fit fact (params, intervals, tied) → the parametric frontier dict."""
    p = fit["params"]
    res = cop.parametric_frontier(p, tied=bool(fit.get("tied"))).to_dict()
    iv = fit.get("intervals") or {}
    if "N_opt_exponent" in iv:
        res["a_ci"] = [iv["N_opt_exponent"]["lo"], iv["N_opt_exponent"]["hi"]]
        res["notes"] = [n for n in res["notes"] if not n.startswith("no interval")]
    if "D_opt_exponent" in iv:
        res["b_ci"] = [iv["D_opt_exponent"]["lo"], iv["D_opt_exponent"]["hi"]]
    return res


def frontier_section(doc, rows, loss_field: str, points_set: str = "default") -> None:
    """Writes the section's text and table into `doc` (the report's _Doc)."""
    from atlas_t5x.scaling import points as fdata

    fits = doc.facts.get("fits") or {}
    points = fdata.rows_to_points(rows, loss_field=loss_field, points=points_set)
    targets = sorted({t for per_law in fits.values() for t in per_law}) or sorted(points["target"].unique())
    doc.add("How to split compute between parameters and data, N\\*(C) ∝ C^a and D\\*(C) ∝ C^b, three "
            "ways (`compute_optimal`; `atlas-fit --approach all` gives the same): **parametric** reads "
            "a = β/(α+β), b = α/(α+β) off each fitted law (headline setting; interval from its bootstrap; "
            "a tied law has a = 0.5 by construction); **isoflop** locates each FLOP budget's minimum over "
            "log N (runs, or WSD trunks read at common budgets, of the target alone) and regresses log N\\* "
            "on log C; **envelope** takes the lowest loss per budget. A budget whose minimum lies at its "
            "smallest or largest size is dropped. Intervals are 95%.", "")
    table, facts = [], {}
    for target in targets:
        res: dict[str, Any] = {}
        for law, per_target in sorted(fits.items()):
            if target not in per_target:
                continue
            fact = per_target[target]
            # a pre-registered tied fit answers a = 0.5 by construction: its untied fit (reported
            # beside it) is the parametric answer the data give
            variants = [(f"parametric ({law}, untied)", fact["untied"])] if fact.get("untied") else []
            variants.append((f"parametric ({law}{', α = β imposed' if fact.get('tied') else ''})", fact))
            for name, f in variants:
                try:
                    res[name] = parametric_from_facts(f)
                except cop.FrontierError as err:
                    res[name] = {"error": str(err)}
        data = cop.compute_optimal(points[points["target"] == target], ("isoflop", "envelope"), strict=False)
        data.pop("disagreements", None)
        res.update(data)
        # disagreements over every pair, laws included
        names = [k for k, v in res.items() if v.get("a_ci")]
        flags = []
        for i, p in enumerate(names):
            for q in names[i + 1:]:
                (l1, h1), (l2, h2) = res[p]["a_ci"], res[q]["a_ci"]
                if h1 < l2 or h2 < l1:
                    flags.append(f"{p} vs {q}")
        for name, r in res.items():
            if "error" in r:
                table.append((target, name, "–", "–", "–", f"not computed: {r['error']}"))
                continue
            notes = "; ".join(r.get("notes", []))
            table.append((target, name, f"{r['a']:.3f} {_ci(r.get('a_ci'))}", f"{r['b']:.3f} {_ci(r.get('b_ci'))}",
                          r.get("n_budgets") or "–", notes or "–"))
        if flags:
            table.append((target, "DISAGREE", "–", "–", "–", "intervals do not overlap: " + ", ".join(flags)))
        res["disagreements"] = flags
        facts[target] = res
    doc.table(("target", "approach", "a [95%]", "b [95%]", "budgets", "notes"), table)
    doc.facts["compute_optimal"] = facts
