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
from collections import defaultdict

from tables import UsageError, by_setting, name_of, parse_method, method_name, rest_of, row_languages, \
    seed_means, setting_labels

COMPARE_FIELDS = ["source", "backbone", "group", "a", "b", "seeds", "languages", "mean_diff", "ci_low", "ci_high",
                  "wins", "ties", "losses", "n_seeds", "sd", "verdict", "left_out", "seed_diffs"]
TIE = 1e-9  # a per-language difference smaller than this is a tie
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
    names = [method_name(*parse_method(m)) for m in (a, b)]
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
    are named in left_out. wins/ties/losses count the languages by the mean over those seeds of A - B.
    """
    zero_shot = [r for r in per_language if r["mode"] == "zero-shot"]
    table, langs_of = by_setting(zero_shot), row_languages(zero_shot, group_langs)
    labels = setting_labels(table)
    rows = []
    for sa, sb in check_pair(table, a, b):
        runs_a, runs_b = table[sa], table[sb]
        common = sorted(set(runs_a) & set(runs_b))
        for group in group_langs:
            rows.append(compare_row(runs_a, runs_b, common, langs_of.get((group, sa[2], "zero-shot"), []),
                                    dict(source=sa[2], backbone=sa[3], group=group, a=labels[sa], b=labels[sb])))
    return rows


def compare_row(runs_a, runs_b, common, langs, head):
    """One COMPARE_FIELDS row (head: its source, backbone, group, a, b) over the seeds in common that cover
    every one of langs in A and in B."""
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
    per_lang = [statistics.fmean(runs_a[s][lang] - runs_b[s][lang] for s in seeds) for lang in langs]
    row.update(seed_diffs=" ".join(f"{d:.6f}" for d in diffs), mean_diff=round(mean, 6), sd=None if sd is None else round(sd, 6), verdict=verdict,
               ci_low=None if low is None else round(low, 6), ci_high=None if high is None else round(high, 6),
               wins=sum(d >= TIE for d in per_lang), ties=sum(abs(d) < TIE for d in per_lang),
               losses=sum(d <= -TIE for d in per_lang))
    return {k: {**head, **row}[k] for k in COMPARE_FIELDS}


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
