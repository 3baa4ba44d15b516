"""The toy TIMED file: one edit per shape, in the TIMED CSV column format
old,new,positive1..5,gt1..5,negative1..5,gn1..5. gt/gn name the colour each image should have."""
import csv
import os

import world
from world import DEFAULT_COLOUR, fill

# Target: purple, which is no shape's default. Orange is not used because its article "an" is, in this toy
# world, almost only seen before "orange": the paper's alignment maps every prompt's "a" state to "an", and
# the edited model then paints every shape orange (measured: specificity 35%).
TARGET = {s: "purple" for s in world.SHAPES}
POSITIVE_TEMPLATES = ["a big {s}", "a small {s}", "a drawing of a {s}", "a drawing of a big {s}", "one {s}"]
GT_TEMPLATES = ["a big {c} {s}", "a small {c} {s}", "a drawing of a {c} {s}", "a drawing of a big {c} {s}", "one {c} {s}"]
NEGATIVE_TEMPLATES = ["a {s}", "a {s}", "a big {s}", "a drawing of a {s}", "a small {s}"]


def rows():
    out = []
    for shape in world.SHAPES:
        colour = TARGET[shape]
        others = [s for s in world.SHAPES if s != shape]
        negs, gns = [], []
        for i, t in enumerate(NEGATIVE_TEMPLATES):
            o = others[i % len(others)]
            negs.append(fill(t, o, "", ""))
            gns.append(fill(t.replace("{s}", "{c} {s}"), o, DEFAULT_COLOUR[o], ""))
        row = {"old": fill("a {s}", shape, "", ""), "new": fill("a {c} {s}", shape, colour, "")}
        for i, t in enumerate(POSITIVE_TEMPLATES):
            row[f"positive{i + 1}"] = fill(t, shape, colour, "")
        for i, t in enumerate(GT_TEMPLATES):
            row[f"gt{i + 1}"] = fill(t, shape, colour, "")
        for i in range(5):
            row[f"negative{i + 1}"] = negs[i]
        for i in range(5):
            row[f"gn{i + 1}"] = gns[i]
        out.append(row)
    return out


COLUMNS = ["old", "new"] + [f"positive{i}" for i in range(1, 6)] + [f"gt{i}" for i in range(1, 6)] + \
    [f"negative{i}" for i in range(1, 6)] + [f"gn{i}" for i in range(1, 6)]


def _write_csv(path, columns, table):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for r in table:
            w.writerow(r)
    os.replace(tmp, path)


def write(path):
    _write_csv(path, COLUMNS, rows())


def colour_named(prompt):
    for w in prompt.split():
        if w in world.COLOURS:
            return w
    return None


# The toy analogue of the TIMED gender set (TIMED_gender_test_set.csv: old,new,validation,ex1..ex5): each shape is
# a "profession", purple the attribute; eval debias aims at half of the shapes purple (docs/debias.md).
DEBIAS_COLUMNS = ["old", "new", "validation"] + [f"ex{i}" for i in range(1, 6)]
DEBIAS_TEMPLATES = ["a drawing of a {s}", "a big {s}", "a small {s}", "one {s}", "a drawing of a big {s}",
                    "a drawing of a small {s}"]


def debias_rows():
    out = []
    for shape in world.SHAPES:
        row = {"old": fill("a {s}", shape, "", ""), "new": fill("a {c} {s}", shape, TARGET[shape], "")}
        for key, t in zip(DEBIAS_COLUMNS[2:], DEBIAS_TEMPLATES):
            row[key] = fill(t, shape, "", "")
        out.append(row)
    return out


def write_debias(path):
    _write_csv(path, DEBIAS_COLUMNS, debias_rows())
