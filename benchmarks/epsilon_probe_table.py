"""Per method, from a run's records: test Acc_f, the feature probe's forget accuracy and its gap to the retrained
model (%), and the epsilon metric's mean estimate and quality, one Markdown table per dataset.

    python benchmarks/epsilon_probe_table.py results/mini-epsilon/run/records.csv   # reports/mini-epsilon
"""
import sys

import pandas as pd
d = pd.read_csv(sys.argv[1])
d = d[d.forget_class.notna() | (d.split == "all")]
def val(metric, split):
    x = d[(d.metric == metric) & (d.split == split)]
    return x.groupby(["dataset", "backbone", "method"]).value.mean()
cols = {"Acc_f": val("acc_forget", "test") * 100, "probe_f": val("probe_forget", "test") * 100,
        "gap": val("probe_forget_gap", "test") * 100, "eps": val("epsilon", "train"), "q": val("epsilon_quality", "train")}
t = pd.DataFrame(cols)
order = ["original", "retrain", "random_labels", "negative_gradient", "wfnet", "neggrad_plus", "random_labels_mixed",
         "finetune", "salun", "l1_sparse", "scrub", "bad_teacher", "ssd", "lf_ssd", "unsir"]
for ds in t.index.levels[0]:
    sub = t.loc[ds]
    backbones = sorted(set(sub.index.get_level_values(0)))
    print(f"\n**{ds}**: Acc_f / probe_forget / gap to retrain (%, test) / ε̂ / quality\n")
    print("| method | " + " | ".join(backbones) + " |")
    print("|---|" + "---|" * len(backbones))
    for m in order:
        cells = []
        for b in backbones:
            if (b, m) in sub.index:
                r = sub.loc[(b, m)]
                f = lambda v, p: "—" if pd.isna(v) else f"{v:.{p}f}"
                cells.append(f"{f(r.Acc_f,1)} / {f(r.probe_f,1)} / {f(r.gap,1)} / {f(r.eps,2)} / {f(r.q,2)}")
            else:
                cells.append("")
        print(f"| {m} | " + " | ".join(cells) + " |")
