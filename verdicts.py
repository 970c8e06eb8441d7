"""Why this file: does method A beat method B? Paired differences with seeds as the unit, t-intervals and verdicts.

For a pair of settings that differ only in method and a target group: d_s, the mean over the group's
languages of A's accuracy minus B's for each seed s both have; then n, the mean of d_s, their standard
deviation and a 95 % t-interval on n - 1 degrees of freedom. The languages are the named members of
the group, not a sample of languages, so they are averaged, not resampled. With fewer than 3 seeds no
interval is given: one degree of freedom makes it the mean ± 12.7 times |d_1 - d_2| / 2, a width that
rests on a single difference.
"""
import math
import statistics
from fractions import Fraction
from collections import defaultdict

import xpe
from xpe import UsageError
from tables import by_setting, name_of, rest_of, row_languages, \
    seed_means, setting_labels

COMPARE_FIELDS = ["source", "backbone", "group", "a", "b", "seeds", "languages", "mean_diff", "ci_low", "ci_high",
                  "wins", "ties", "losses", "n_seeds", "sd", "verdict", "left_out", "seed_diffs"]
MIN_SEEDS = 3  # fewer: no interval, "too few seeds"
LEVEL = 0.95


# ---- Student's t, without scipy ---------------------------------------------------------------------

def _beta_fraction(a, b, x):
    """The continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a, b, x):
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p, df):
    """The t with P(T <= t) = p (0.5 <= p < 1), by bisection on t_cdf to float precision."""
    if not 0.5 <= p < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df > 0, got p={p}, df={df}")
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def seed_interval(diffs, level=LEVEL):
    """(n, mean, sd, low, high, verdict) of per-seed differences; sd "" below 2 seeds, no interval below 3."""
    n = len(diffs)
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else None
    if n < MIN_SEEDS:
        return n, mean, sd, None, None, "too few seeds"
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "holds" if low > 0 else "fails" if high < 0 else "undecided"
    return n, mean, sd, low, high, verdict


# ---- paired settings ---------------------------------------------------------------------------

def pair_settings(table, a, b):
    """[(setting of A, setting of B)] that differ only in method; a UsageError naming the candidates if none."""
    found = defaultdict(list)
    for setting in table:
        found[name_of(setting)].append(setting)
    for name in (a, b):
        if name not in found:
            raise UsageError(f"no zero-shot runs of {name} to compare; there are runs of: "
                             f"{', '.join(sorted(found)) or 'none'}")
    sources = {name: sorted({s[2] for s in found[name]}) for name in (a, b)}
    if not set(sources[a]) & set(sources[b]):
        raise UsageError(f"{a} and {b} have no source in common ({a}: {', '.join(sources[a])}; {b}: "
                         f"{', '.join(sources[b])}): train both on one source")
    pairs = [(sa, sb) for sa in found[a] for sb in found[b] if rest_of(sa) == rest_of(sb)]
    if not pairs:
        labels = setting_labels(found[a] + found[b], across_methods=True)
        raise UsageError(f"no setting of {a} differs from one of {b} only in method (candidates: "
                         f"{'; '.join(f'{labels[s]} from {s[2]}' for s in found[a] + found[b])}): train them with "
                         f"the same settings")
    return sorted(pairs, key=lambda p: (p[0][2], p[0][3], str(p[0][5])))


def check_pair(table, a, b):
    """The setting pairs of --compare A,B in table (by_setting of zero-shot rows), each with a seed in common."""
    names = [xpe.method_name(*xpe.parse_method(m)) for m in (a, b)]
    if names[0] == names[1]:
        raise UsageError(f"--compare {a},{b} compares {names[0]} with itself: name two methods, e.g. xpe,spt")
    pairs = pair_settings(table, *names)
    for sa, sb in pairs:
        if not set(table[sa]) & set(table[sb]):
            raise UsageError(f"{names[0]} and {names[1]} from {sa[2]} are unpaired: no seed in common "
                             f"({names[0]}: {', '.join(map(str, sorted(table[sa])))}; "
                             f"{names[1]}: {', '.join(map(str, sorted(table[sb])))}): train them with the same --seed")
    return pairs


def compare(per_language, a, b, group_langs):
    """Paired zero-shot differences A - B per setting pair, source and target group: COMPARE_FIELDS rows.

    a, b: methods as method_name writes them (xpe, spt, dual:0.7). A seed is in a row when A and B both
    have it on every language of the row (the group's languages the source was scored on); the others
    are named in left_out. wins/ties/losses count the languages by the sign of the mean over those seeds of
    A - B, from the rows counted right (correct_rows): a tie is no difference at all.
    """
    zero_shot = [r for r in per_language if r["mode"] == "zero-shot"]
    table, langs_of = by_setting(zero_shot), row_languages(zero_shot, group_langs)
    counted = by_setting(zero_shot, value=correct_rows)
    labels = setting_labels(table)
    rows = []
    for sa, sb in check_pair(table, a, b):
        runs_a, runs_b = table[sa], table[sb]
        common = sorted(set(runs_a) & set(runs_b))
        for group in group_langs:
            rows.append(compare_row(runs_a, runs_b, common, langs_of.get((group, sa[2], "zero-shot"), []),
                                    dict(source=sa[2], backbone=sa[3], group=group, a=labels[sa], b=labels[sb]),
                                    (counted[sa], counted[sb])))
    return rows


def correct_rows(row):
    """A row's accuracy as the exact share of its n test rows it got right (scoring rounds it to 6 decimals)."""
    return Fraction(round(row["accuracy"] * row["n"]), row["n"])


def compare_row(runs_a, runs_b, common, langs, head, counted):
    """One COMPARE_FIELDS row (head: its source, backbone, group, a, b) over the seeds in common that cover
    every one of langs in A and in B; counted: A's and B's exact shares right (correct_rows), for the signs."""
    full_a, part_a = seed_means({s: runs_a[s] for s in common}, langs)
    full_b, part_b = seed_means({s: runs_b[s] for s in common}, langs)
    seeds = [s for s in common if s in full_a and s in full_b]
    left_out = sorted((set(full_a) | set(full_b) | set(part_a) | set(part_b)) - set(seeds))
    row = dict(seeds=" ".join(map(str, seeds)), languages=len(langs), mean_diff=None, ci_low=None, ci_high=None,
               wins=0, ties=0, losses=0, n_seeds=len(seeds), sd=None, verdict="no seeds",
               left_out=" ".join(map(str, left_out)), seed_diffs="")
    if not seeds:  # e.g. a group of the source's own languages: nothing zero-shot to compare
        return {k: {**head, **row}[k] for k in COMPARE_FIELDS}
    diffs = [full_a[s] - full_b[s] for s in seeds]
    n, mean, sd, low, high, verdict = seed_interval(diffs)
    per_lang = [sum(counted[0][s][lang] - counted[1][s][lang] for s in seeds) for lang in langs]  # exact
    row.update(seed_diffs=" ".join(f"{d:.6f}" for d in diffs), mean_diff=round(mean, 6), sd=None if sd is None else round(sd, 6), verdict=verdict,
               ci_low=None if low is None else round(low, 6), ci_high=None if high is None else round(high, 6),
               wins=sum(d > 0 for d in per_lang), ties=sum(d == 0 for d in per_lang),
               losses=sum(d < 0 for d in per_lang))
    return {k: {**head, **row}[k] for k in COMPARE_FIELDS}


# ---- margins: what an interval rules out, and the seeds a decision would need ------------------------------

MARGIN_FIELDS = ["source", "backbone", "group", "a", "b", "margin", "languages", "n_seeds", "mean_diff", "ci_low",
                 "ci_high", "sd", "rules_out_plus", "rules_out_minus", "decision", "power", "seeds_for_power"]
POWER = 0.8


def margin_decision(low, high, margin):
    """(rules out +M, rules out -M, decision): what a 95 % interval [low, high] says of a difference of margin M
    (> 0) or more, either way. decision "within": the interval lies inside (-M, +M), so no difference as large
    as M either way; "below": it rules out +M or more only; "above": -M or less only; "neither": neither side.
    """
    plus, minus = high < margin, low > -margin
    return plus, minus, "within" if plus and minus else "below" if plus else "above" if minus else "neither"


def power_at(margin, sd, n, level=LEVEL):
    """The chance that n seeds of per-seed sd give an interval that excludes 0 when the difference is margin
    (a paired t-test; the noncentral t approximated by a shifted central one)."""
    if n < 2 or not sd:
        return None
    return 1 - t_cdf(t_quantile(0.5 + level / 2, n - 1) - margin * math.sqrt(n) / sd, n - 1)


def seeds_for_power(margin, sd, power=POWER, level=LEVEL, most=10_000):
    """The fewest seeds whose interval excludes 0 with the given power when the difference is margin, at the
    observed per-seed sd: the smallest n with t(level, n-1) + t(power, n-1) <= margin * sqrt(n) / sd."""
    if not sd:
        return None

    def enough(n):  # true from some n on: the left side falls and the right side grows with n
        return t_quantile(0.5 + level / 2, n - 1) + t_quantile(power, n - 1) <= margin * math.sqrt(n) / sd
    high = MIN_SEEDS
    while not enough(high):  # doubling, then halving: a few dozen quantiles, not one pair a candidate n
        if high >= most:
            return None
        high = min(2 * high, most)
    low = max(MIN_SEEDS, high // 2)
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid + 1, high)
    return high


def margin_rows(compared, margins):
    """MARGIN_FIELDS rows: each compare row with a per-seed sd, against each margin (a fraction, e.g. 0.02); below
    MIN_SEEDS seeds, no interval: no decision, but the seeds a decision would need."""
    rows = []
    for r in compared:
        if r["sd"] is None:
            continue
        for margin in margins:
            if r["ci_low"] is None:
                plus, minus, decision, power = None, None, "too few seeds", None
            else:
                plus, minus, decision = margin_decision(r["ci_low"], r["ci_high"], margin)
                power = power_at(margin, r["sd"], r["n_seeds"])
            rows.append({**{k: r[k] for k in ("source", "backbone", "group", "a", "b", "languages", "n_seeds",
                                              "mean_diff", "ci_low", "ci_high", "sd")},
                         "margin": round(margin, 6), "rules_out_plus": {True: "yes", False: "no"}.get(plus, ""),
                         "rules_out_minus": {True: "yes", False: "no"}.get(minus, ""), "decision": decision,
                         "power": None if power is None else round(power, 3),
                         "seeds_for_power": seeds_for_power(margin, r["sd"])})
    return rows


def decision_text(decision, points):
    return {"within": f"no effect of {points:g} either way", "below": f"below +{points:g}",
            "above": f"above -{points:g}"}.get(decision, decision)


def margin_text(rows):
    """margin_rows as an aligned table, in accuracy points."""
    header = ["source", "group", "A - B", "M (pp)", "95 % t-interval (pp)", "rules out +M", "rules out -M",
              "decision", "seeds", "power at M", f"seeds for {POWER:.0%} power"]
    lines = [[r["source"], r["group"], f"{r['a']} - {r['b']}", f"{100 * r['margin']:g}",
              "-" if r["ci_low"] is None else f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]",
              r["rules_out_plus"] or "-", r["rules_out_minus"] or "-",
              decision_text(r["decision"], 100 * r["margin"]), r["n_seeds"],
              "-" if r["power"] is None else f"{r['power']:.2f}",
              "-" if r["seeds_for_power"] is None else r["seeds_for_power"]] for r in rows]
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + lines)


def compare_notes(rows):
    return [f"{r['a']} - {r['b']} from {r['source']} on {r['group']}: seed{'s' if ' ' in r['left_out'] else ''} "
            f"{r['left_out'].replace(' ', ', ')} left out, not scored on all {r['languages']} languages in both"
            for r in rows if r["left_out"]]


def compare_text(rows):
    """compare's rows as an aligned table, differences in accuracy points (%)."""
    several = len({r["backbone"] for r in rows}) > 1
    header = ["source"] + (["backbone"] if several else []) + [
        "group", "A - B", "mean (pp)", "sd (pp)", "95 % t-interval (pp)", "verdict", "seeds", "wins", "ties",
        "losses", "languages"]
    lines = []
    for r in rows:
        known = r["mean_diff"] is not None
        lines.append([r["source"]] + ([r["backbone"]] if several else []) + [
            r["group"], f"{r['a']} - {r['b']}", f"{100 * r['mean_diff']:+.2f}" if known else "-",
            f"{100 * r['sd']:.2f}" if r["sd"] is not None else "-",
            f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]" if r["ci_low"] is not None else "-",
            r["verdict"], r["n_seeds"], r["wins"], r["ties"], r["losses"], r["languages"]])
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + lines)


def print_compare(rows):
    print(compare_text(rows))
