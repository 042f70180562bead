#!/usr/bin/env python3
"""Checks `sonoedge eval --json` against independent implementations.

From the JSON's own per-image predictions (true label, probabilities), recomputes every figure
that scikit-learn has with scikit-learn, every Wilson interval with statsmodels, and the
expected calibration error and the card's two-class form with plain numpy (no library has
them in this exact form), then prints the largest absolute difference per figure and exits 1
if any exceeds the tolerance (1e-9). Bootstrap intervals are not rechecked (they depend on the
resampling stream); their point values are.

    pip install scikit-learn statsmodels numpy
    sonoedge eval --model M --data DIR --json eval.json
    python3 models/eval_check.py eval.json
"""
import argparse
import json
import math
import sys

import numpy as np
from sklearn import metrics as skm
from statsmodels.stats.proportion import proportion_confint

TOL = 1e-9


def value(e):
    return float("nan") if e["value"] is None else e["value"]


class Diffs:
    """Largest absolute difference per figure; undefined (None / NaN) must match undefined."""

    def __init__(self):
        self.worst = {}

    def add(self, name, ours, theirs):
        ours, theirs = np.atleast_1d(np.asarray(ours, float)), np.atleast_1d(np.asarray(theirs, float))
        if ours.shape != theirs.shape or not np.array_equal(np.isnan(ours), np.isnan(theirs)):
            d = math.inf
        else:
            ok = ~np.isnan(ours)
            d = float(np.max(np.abs(ours[ok] - theirs[ok]), initial=0.0))
        self.worst[name] = max(self.worst.get(name, 0.0), d)

    def wilson(self, name, est, successes, trials):
        if trials == 0:
            self.add(name + " ci95 (statsmodels wilson)", [math.nan] * 2, [math.nan] * 2 if est["ci95"] is None else est["ci95"])
            return
        lo, hi = proportion_confint(successes, trials, alpha=0.05, method="wilson")
        self.add(name + " ci95 (statsmodels wilson)", est["ci95"], [lo, hi])


def load(path):
    with open(path) as f:
        report = json.load(f)
    labels = report["labels"]
    preds = report["predictions"]
    y = np.array([labels.index(p["true_label"]) for p in preds])
    probs = np.array([[p["probs"][l] for l in labels] for p in preds])
    return report, labels, y, probs


def check_overall(d, r, y, yhat, k):
    d.add("confusion_matrix (sklearn)", r["confusion_matrix"], skm.confusion_matrix(y, yhat, labels=range(k)))
    d.add("accuracy (sklearn)", value(r["accuracy"]), skm.accuracy_score(y, yhat))
    d.wilson("accuracy", r["accuracy"], int((y == yhat).sum()), len(y))
    d.add("balanced_accuracy (sklearn)", value(r["balanced_accuracy"]), skm.balanced_accuracy_score(y, yhat))
    for avg in ("macro", "weighted"):
        p, rec, f1, _ = skm.precision_recall_fscore_support(y, yhat, labels=range(k), average=avg, zero_division=np.nan)
        ours = r[avg + "_avg"]
        d.add(f"{avg} precision/recall/f1 (sklearn)", [value(ours["precision"]), value(ours["recall"]), value(ours["f1"])], [p, rec, f1])


def check_per_class(d, r, labels, y, yhat, probs):
    k = len(labels)
    p, rec, f1, support = skm.precision_recall_fscore_support(y, yhat, labels=range(k), average=None, zero_division=np.nan)
    aucs = []
    for c, label in enumerate(labels):
        ours = r["per_class"][label]
        d.add("per-class precision (sklearn)", value(ours["precision"]), p[c])
        d.add("per-class recall (sklearn)", value(ours["recall"]), rec[c])
        d.add("per-class f1 (sklearn)", value(ours["f1"]), f1[c])
        d.add("per-class support (sklearn)", ours["support"], support[c])
        pos, neg = y == c, y != c
        spec = skm.recall_score(neg, yhat != c, zero_division=np.nan) if neg.any() else math.nan
        d.add("per-class specificity (sklearn recall of the rest)", value(ours["specificity"]), spec)
        auc = skm.roc_auc_score(pos, probs[:, c]) if pos.any() and neg.any() else math.nan
        aucs.append(auc)
        d.add("per-class roc_auc (sklearn)", value(ours["roc_auc"]), auc)
        tp = int((pos & (yhat == c)).sum())
        d.wilson("per-class precision", ours["precision"], tp, int((yhat == c).sum()))
        d.wilson("per-class recall", ours["recall"], tp, int(pos.sum()))
        d.wilson("per-class specificity", ours["specificity"], int((neg & (yhat != c)).sum()), int(neg.sum()))
    if len(set(y.tolist())) == k:
        macro = skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=range(k))
    else:
        macro = np.nanmean(aucs)
    d.add("macro roc_auc (sklearn ovr)", value(r["macro_roc_auc"]), macro)


def ece(y, probs, bins):
    """Equal-width bins ((i-1)/bins, i/bins] of top-1 confidence."""
    conf, yhat = probs.max(axis=1), probs.argmax(axis=1)
    idx = np.clip(np.ceil(conf * bins).astype(int), 1, bins) - 1
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(y) * abs((yhat[m] == y[m]).mean() - conf[m].mean())
    return total


def check_card(d, r, labels, y, yhat):
    card = r["card_form"]
    if card is None:
        return
    b, m = labels.index("benign"), labels.index("malignant")
    keep = np.isin(y, [b, m]) & np.isin(yhat, [b, m])
    d.add("card n / exclusions (numpy)", [card["n"], card["excluded_true_other"], card["excluded_predicted_other"]],
          [keep.sum(), (~np.isin(y, [b, m])).sum(), (np.isin(y, [b, m]) & ~np.isin(yhat, [b, m])).sum()])
    yt, yp = y[keep] == m, yhat[keep] == m
    d.add("card accuracy (sklearn)", value(card["accuracy"]), skm.accuracy_score(yt, yp))
    d.add("card sensitivity (sklearn)", value(card["sensitivity"]), skm.recall_score(yt, yp, zero_division=np.nan))
    d.add("card specificity (sklearn)", value(card["specificity"]), skm.recall_score(~yt, ~yp, zero_division=np.nan))
    d.wilson("card accuracy", card["accuracy"], int((yt == yp).sum()), len(yt))
    d.wilson("card sensitivity", card["sensitivity"], int((yt & yp).sum()), int(yt.sum()))
    d.wilson("card specificity", card["specificity"], int((~yt & ~yp).sum()), int((~yt).sum()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="the file written by `sonoedge eval --json`")
    args = ap.parse_args()
    r, labels, y, probs = load(args.json)
    yhat = probs.argmax(axis=1)
    d = Diffs()
    d.add("predicted label == argmax(probs)", [labels.index(p["predicted"]) for p in r["predictions"]], yhat)
    check_overall(d, r, y, yhat, len(labels))
    check_per_class(d, r, labels, y, yhat, probs)
    d.add("ece (numpy, 15 bins)", value(r["ece"]), ece(y, probs, r["ece_bins"]))
    check_card(d, r, labels, y, yhat)
    print(f"{len(y)} predictions, {len(labels)} labels; max abs difference per figure (tolerance {TOL:g}):")
    for name, diff in d.worst.items():
        print(f"  {'ok ' if diff <= TOL else 'BAD'} {diff:.3e}  {name}")
    bad = [n for n, diff in d.worst.items() if diff > TOL]
    if bad:
        print(f"{len(bad)} figure(s) differ beyond {TOL:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
