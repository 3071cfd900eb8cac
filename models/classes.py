"""Named class sets drawn from one 50-class ESC-50 model (the outputs are restricted and renormalised), and
classes beyond ESC-50 that a classifier with AudioSet tags hears through its AudioSet head."""
from __future__ import annotations

import numpy as np

ESC50_CLASSES = [
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
]

# Sounds visitors make that ESC-50 lacks, each heard as the strongest of its AudioSet tags.
AUDIOSET_CLASSES = {
    "horse": ("Horse", "Neigh, whinny", "Clip-clop"),
    "duck": ("Duck", "Quack"),
    "owl": ("Owl", "Hoot"),
    "goat": ("Goat", "Bleat"),
    "bird_song": ("Bird vocalization, bird call, bird song", "Chirp, tweet"),
}

# ESC-50's five major categories, ten classes each, in target order; "farm" reaches past ESC-50.
CLASS_SETS = {
    "animals": ESC50_CLASSES[0:10],
    "natural": ESC50_CLASSES[10:20],
    "human": ESC50_CLASSES[20:30],
    "domestic": ESC50_CLASSES[30:40],
    "urban": ESC50_CLASSES[40:50],
    "farm": ["dog", "rooster", "pig", "cow", "frog", "cat", "hen", "sheep", "horse", "duck", "owl"],
}


TAUGHT_SET = "taught"  # a class set of the venue's taught sounds alone (models/taught.py)


def resolve_class_set(spec: str | list[str] | None, model_classes: list[str],
                      tag_names: list[str] | tuple = ()) -> list[str] | None:
    """None/"all" -> None (every class of the model); a set name -> its classes; a list -> itself, checked.
    AUDIOSET_CLASSES are known where the classifier gives AudioSet tags (`tag_names`)."""
    if spec is None or spec == "all":
        return None
    if spec == TAUGHT_SET:
        return []  # the venue's taught sounds only: the server adds them as they are taught
    classes = CLASS_SETS.get(spec) if isinstance(spec, str) else list(spec)
    if classes is None:
        raise ValueError(f"unknown class set {spec!r}; use 'all', one of {sorted(CLASS_SETS)}, or a list of classes")
    unknown = [c for c in classes if c not in model_classes and not (c in AUDIOSET_CLASSES and tag_names)]
    if unknown:
        beyond = " (horse, duck, owl... need a classifier with AudioSet tags)" if set(unknown) & set(AUDIOSET_CLASSES) else ""
        raise ValueError(f"classes not known to the model: {unknown}{beyond}")
    return classes


def class_set_probabilities(probs: np.ndarray, model_classes: list[str], subset: list[str],
                            tags: np.ndarray | None = None, tag_names: list[str] | tuple = ()) -> np.ndarray:
    """Probabilities over `subset`. Its ESC-50 classes share the classifier's probability restricted to them;
    its AudioSet classes each score the strongest of their tags, and the strongest of those, m, is the share
    they take together (so a clear neigh is "horse" and, with no such tag, the ESC-50 classes keep it all)."""
    extra = [c for c in subset if c not in model_classes]
    esc = [c for c in subset if c in model_classes]
    out = np.zeros(len(subset))
    if esc:
        out[[subset.index(c) for c in esc]] = restrict(probs, model_classes, esc)
    if extra and tags is not None:
        index = {n: i for i, n in enumerate(tag_names)}
        q = np.array([max(float(tags[index[t]]) for t in AUDIOSET_CLASSES[c]) for c in extra])
        m = float(q.max()) if esc else 1.0
        out *= 1.0 - m
        out[[subset.index(c) for c in extra]] = m * q / max(float(q.sum()), 1e-12)
    return out


def restrict(probs: np.ndarray, class_names: list[str], subset: list[str]) -> np.ndarray:
    """Probabilities over `subset` only, renormalised as a class set drawn from one model. A share the model gave to
    no class at all (talk's, with taught sounds: models/taught.py) stays no class's: the class set's probabilities
    then sum to what the model gave to classes."""
    missing = [c for c in subset if c not in class_names]
    if missing:
        raise ValueError(f"classes not in the model: {missing}")
    idx = [class_names.index(c) for c in subset]
    sub = probs[..., idx]
    unclassed = np.clip(1.0 - probs.sum(-1, keepdims=True), 0.0, 1.0)
    return sub / np.clip(sub.sum(-1, keepdims=True) + unclassed, 1e-12, None)
