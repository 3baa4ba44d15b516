"""The toy world: one flat-coloured shape on a light background, its captions, and
the deterministic colour classifier (the same algorithm as lib/eval/colour-classifier.ts).
"""
import numpy as np

IMAGE_SIZE = 32
SUPERSAMPLE = 4
BACKGROUND = (236, 236, 236)

SHAPES = ["circle", "square", "triangle", "star"]
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}
# Order matters: it is the tie-break order of the classifier and the index order everywhere.
COLOURS = {
    "red": (220, 38, 38),
    "orange": (245, 125, 20),
    "yellow": (240, 210, 25),
    "green": (34, 160, 60),
    "blue": (35, 85, 225),
    "purple": (140, 55, 200),
}
COLOUR_NAMES = list(COLOURS)
# The implicit assumptions the model must learn (purple and orange are nobody's default).
DEFAULT_COLOUR = {"circle": "red", "square": "blue", "triangle": "green", "star": "yellow"}
DEFAULT_PROB = 0.9
NAMED_PROB = 0.5
# Radius of the shape's circumscribing circle in pixels (32-pixel image).
SIZES = {"small": 6.0, "big": 10.0}
SIZE_NAMES = list(SIZES)


def article(word):
    return "an" if word[0] in "aeiou" else "a"


# {c} colour, {s} shape, {z} size. Templates are filled and then the article fixed.
NAMED_TEMPLATES = [
    "a {c} {s}", "a {c} {s}", "a {z} {c} {s}", "a photo of a {c} {s}", "an image of a {c} {s}",
    "a picture of a {c} {s}", "a drawing of a {c} {s}", "a photo of a {z} {c} {s}", "one {c} {s}",
]
UNNAMED_TEMPLATES = [
    "a {s}", "a {s}", "a {z} {s}", "a photo of a {s}", "an image of a {s}", "a picture of a {s}",
    "a drawing of a {s}", "a photo of a {z} {s}", "one {s}",
]

# Words the tokenizer must hold as single tokens, beyond the captions' words.
EXTRA_WORDS = (
    "a an the of photo image picture drawing painting sketch shape shapes colour color "
    "one two three four five six seven eight nine ten zero and with on in at background "
    "white black grey gray pink brown light dark large tiny little small big "
).split()


def fill(template, shape, colour, size):
    words = template.format(c=colour, s=shape, z=size).split()
    # "a" followed by a vowel-initial word becomes "an" (templates always write "a").
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = article(words[i + 1])
    return " ".join(words)


def vocabulary_words():
    words = set(EXTRA_WORDS)
    words.update(SHAPES)
    words.update(PLURALS.values())
    words.update(COLOUR_NAMES)
    words.update(SIZE_NAMES)
    for t in NAMED_TEMPLATES + UNNAMED_TEMPLATES:
        for w in t.split():
            if not w.startswith("{"):
                words.add(w)
    return sorted(words)


def _star(r):
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r * 1.15, r * 1.15 * 0.45)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _triangle(r):
    angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
    rr = r * 1.1
    pts = np.stack([rr * np.cos(angles), rr * np.sin(angles)], 1)
    pts[:, 1] += rr * 0.25  # centre the triangle's bounding box
    return pts


def _inside_polygon(x, y, poly):
    inside = np.zeros(x.shape, bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        crosses = (y1 > y) != (y2 > y)
        xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1 + 1e-12)
        inside ^= crosses & (x < xint)
    return inside


def shape_mask(shape, cx, cy, r, size=IMAGE_SIZE, ss=SUPERSAMPLE):
    """Anti-aliased coverage in [0,1], shape [size,size]."""
    n = size * ss
    coords = (np.arange(n) + 0.5) / ss
    y, x = np.meshgrid(coords, coords, indexing="ij")
    dx, dy = x - cx, y - cy
    if shape == "circle":
        m = dx * dx + dy * dy <= r * r
    elif shape == "square":
        h = r * 0.8
        m = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    elif shape == "triangle":
        m = _inside_polygon(dx, dy, _triangle(r))
    elif shape == "star":
        m = _inside_polygon(dx, dy, _star(r))
    else:
        raise ValueError(shape)
    return m.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render(shape, colour, size_name, cx, cy):
    """uint8 RGB image [32,32,3]."""
    a = shape_mask(shape, cx, cy, SIZES[size_name])[..., None]
    bg = np.array(BACKGROUND, np.float64)
    fg = np.array(COLOURS[colour], np.float64)
    return np.round(bg * (1 - a) + fg * a).astype(np.uint8)


def sample_scene(rng):
    """One scene: (shape, colour, size, named, cx, cy). The colour prior depends on whether
    the caption will name the colour."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    size = SIZE_NAMES[rng.integers(len(SIZE_NAMES))]
    named = bool(rng.random() < NAMED_PROB)
    if named:
        colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    elif rng.random() < DEFAULT_PROB:
        colour = DEFAULT_COLOUR[shape]
    else:
        others = [c for c in COLOUR_NAMES if c != DEFAULT_COLOUR[shape]]
        colour = others[rng.integers(len(others))]
    r = SIZES[size]
    margin = IMAGE_SIZE / 2 - r * 1.2 - 1
    jitter = min(4.0, max(0.0, margin))
    cx = IMAGE_SIZE / 2 + rng.uniform(-jitter, jitter)
    cy = IMAGE_SIZE / 2 + rng.uniform(-jitter, jitter)
    return shape, colour, size, named, cx, cy


# ---------------------------------------------------------------- colour classifier
# Foreground = saturated pixels (the background is grey). Each foreground pixel votes for
# the colour whose hue is circularly nearest; the most voted colour wins (ties: COLOURS order).
SAT_MIN = 0.3
VALUE_MIN = 0.2
MIN_PIXELS = 4


def hue_sat_val(rgb):
    """rgb float array [...,3] in [0,1] -> (hue degrees [0,360), saturation, value)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.max(rgb, -1)
    mn = np.min(rgb, -1)
    c = mx - mn
    safe = np.where(c > 0, c, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6.0,
                 np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h = np.where(c > 0, h * 60.0, 0.0)
    s = np.where(mx > 0, c / np.where(mx > 0, mx, 1.0), 0.0)
    return h % 360.0, s, mx


COLOUR_HUES = {k: float(hue_sat_val(np.array(v, np.float64) / 255.0)[0]) for k, v in COLOURS.items()}


def classify_colour(img_uint8):
    """img [H,W,3] uint8 -> colour name, or 'none' when too few saturated pixels."""
    rgb = img_uint8.astype(np.float64) / 255.0
    h, s, v = hue_sat_val(rgb)
    fg = (s >= SAT_MIN) & (v >= VALUE_MIN)
    if fg.sum() < MIN_PIXELS:
        return "none"
    hues = h[fg]
    centres = np.array([COLOUR_HUES[c] for c in COLOUR_NAMES])
    d = np.abs(hues[:, None] - centres[None, :])
    d = np.minimum(d, 360.0 - d)
    votes = np.bincount(np.argmin(d, 1), minlength=len(COLOUR_NAMES))
    return COLOUR_NAMES[int(np.argmax(votes))]
