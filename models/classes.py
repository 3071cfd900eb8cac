"""Named class sets drawn from one 50-class ESC-50 model (the outputs are restricted and renormalised)."""
from __future__ import annotations

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

# ESC-50's five major categories, ten classes each, in target order.
CLASS_SETS = {
    "animals": ESC50_CLASSES[0:10],
    "natural": ESC50_CLASSES[10:20],
    "human": ESC50_CLASSES[20:30],
    "domestic": ESC50_CLASSES[30:40],
    "urban": ESC50_CLASSES[40:50],
}


def resolve_class_set(spec: str | list[str] | None, model_classes: list[str]) -> list[str] | None:
    """None/"all" -> None (every class of the model); a set name -> its classes; a list -> itself, checked."""
    if spec is None or spec == "all":
        return None
    classes = CLASS_SETS.get(spec) if isinstance(spec, str) else list(spec)
    if classes is None:
        raise ValueError(f"unknown class set {spec!r}; use 'all', one of {sorted(CLASS_SETS)}, or a list of classes")
    unknown = [c for c in classes if c not in model_classes]
    if unknown:
        raise ValueError(f"classes not known to the model: {unknown}")
    return classes
