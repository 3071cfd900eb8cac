"""Open-set gating: when to show a class at all. The one definition of the gate's settings lives here.

A closed-set classifier always names one of its classes, even for an empty room or an air conditioner.
The rules, in order:
  1. energy: a window quieter than `silence_dbfs` is "listening", whatever the model says;
  2. what AudioSet hears (classifiers with tags, the shipped one): a window whose strongest tag is a kind of
     background (silence, noise, hum, air conditioning, the sound of a room) is "listening"; one whose
     strongest tag is speech shows nothing, or the class "speech" where the venue says `speech = "show"`, except a
     taught sound made with a voice: a winning class the classifier says is near a taught sound's own examples
     (`voiced`, models/taught.py) is shown like any other (rule 3 still applies);
  3. confidence: a winning class below `min_confidence` is not shown; one a taught sound carries in this window
     (`taught`: most of its probability is a taught sound's) is held to `taught_confidence` instead, where a venue
     sets it (the toy: its built-in animals must be sure before a child sees one, a child's own "moo" need not);
  4. hysteresis: a class must win `enter_windows` windows in a row to be shown (one window is enough at
     `sure_confidence` or above), and then stays shown for
     `hold_seconds` after its last win (so a dog that barks twice keeps its picture between barks; a minute
     of barking is a minute of dog). This is the only hold: the app shows what the gate says.
  5. room floor (`floor_margin_db` > 0; for classifiers without tags): a window less than that many dB above
     the quietest window of the last `floor_seconds` is background too, and so is the first window. It fades
     out a sound that goes on (a bark on a loop becomes "the room"), so it is off unless a venue sets it.
Pure Python, no numpy needed: the server calls `update` once per window.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Mapping, Sequence

SPEECH = "speech"  # the class a venue with `speech = "show"` sees for talking
SPEECH_POLICIES = ("ignore", "show")

# AudioSet display names (models/weights/audioset_class_labels_indices.csv) that are the room, not an event.
BACKGROUND_TAGS = (
    "Silence", "Noise", "White noise", "Pink noise", "Static", "Hum", "Mains hum", "Buzz", "Hiss",
    "Environmental noise", "Air conditioning", "Mechanical fan", "Wind noise (microphone)",
    "Inside, small room", "Inside, large room or hall", "Inside, public space", "Outside, urban or manmade",
    "Outside, rural or natural", "Distortion", "Sidetone", "Cacophony", "Echo", "Reverberation",
)
SPEECH_TAGS = (
    "Speech", "Male speech, man speaking", "Female speech, woman speaking", "Child speech, kid speaking",
    "Conversation", "Narration, monologue", "Babbling", "Speech synthesizer", "Whispering", "Chatter",
    "Hubbub, speech noise, speech babble", "Television", "Radio",
)


@dataclass(frozen=True)
class GateSettings:
    silence_dbfs: float = -60.0
    min_confidence: float = 0.4
    enter_windows: int = 1
    sure_confidence: float = 1.0    # a class this likely enters with one window whatever enter_windows says
    taught_confidence: float | None = None  # rule 3 for a class a taught sound carries; None: min_confidence
    hold_seconds: float = 2.0
    speech: str = "ignore"          # "ignore": talking shows nothing; "show": it is the class "speech"
    floor_margin_db: float = 0.0    # the room-floor rule (5 above); 0: off
    floor_seconds: float = 20.0

    def __post_init__(self):
        if self.enter_windows < 1:
            raise ValueError("enter_windows must be >= 1")
        if self.speech not in SPEECH_POLICIES:
            raise ValueError(f"speech must be one of {', '.join(SPEECH_POLICIES)}, got {self.speech!r}")


class TagReader:
    """Reads a window's AudioSet tag probabilities as one of "background", "speech" or "event"."""

    def __init__(self, tag_names: Sequence[str]):
        index = {name: i for i, name in enumerate(tag_names)}
        self.background = [index[t] for t in BACKGROUND_TAGS if t in index]
        self.speech = [index[t] for t in SPEECH_TAGS if t in index]
        self.names = list(tag_names)

    def kind(self, tags: Sequence[float]) -> str:
        top = max(range(len(tags)), key=tags.__getitem__)
        if top in self.background:
            return "background"
        return "speech" if top in self.speech else "event"


class OpenSetGate:
    def __init__(self, settings: GateSettings = GateSettings(), class_names: Sequence[str] | None = None,
                 tag_names: Sequence[str] | None = None):
        self.settings = settings
        self.class_names = list(class_names) if class_names is not None else None
        self.tags = TagReader(tag_names) if tag_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.candidate, self.streak = None, 0  # the class winning the latest windows, and for how many
        self.shown, self.shown_until = None, float("-inf")
        self.history = deque()  # (time, dBFS) of recent windows, for the room floor

    def _below_floor(self, dbfs: float, now: float) -> bool:
        s = self.settings
        if s.floor_margin_db <= 0:
            return False
        while self.history and self.history[0][0] < now - s.floor_seconds:
            self.history.popleft()
        quiet = not self.history or dbfs < min(d for _, d in self.history) + s.floor_margin_db
        self.history.append((now, dbfs))
        return quiet

    def _top(self, probs) -> tuple[object, float]:
        if not len(probs):  # a class set of taught sounds with none taught yet
            return None, 0.0
        if isinstance(probs, Mapping):
            label = max(probs, key=probs.get)
            return label, float(probs[label])
        probs = list(probs)
        i = max(range(len(probs)), key=probs.__getitem__)
        return (self.class_names[i] if self.class_names is not None else i), float(probs[i])

    def _prob(self, probs, label) -> float:
        if label == SPEECH:
            return 1.0
        if isinstance(probs, Mapping):
            return float(probs.get(label, 0.0))
        probs = list(probs)
        i = self.class_names.index(label) if self.class_names is not None else label
        return float(probs[i])

    def hears(self, probs, dbfs: float, now: float, tags: Sequence[float] | None = None,
              voiced=(), taught=()) -> tuple[object | None, float]:
        """This window alone: (the class it names or None, its confidence)."""
        quiet = self._below_floor(dbfs, now) or dbfs < self.settings.silence_dbfs
        if quiet:
            return None, 0.0
        label, conf = self._top(probs)
        if tags is not None and self.tags is not None:
            kind = self.tags.kind(tags)
            if kind == "background":
                return None, 0.0
            if kind == "speech" and label not in voiced:
                return (SPEECH, 1.0) if self.settings.speech == "show" else (None, 0.0)
        s = self.settings
        needed = s.taught_confidence if label in taught and s.taught_confidence is not None else s.min_confidence
        return (label if conf >= needed else None), conf

    def carry_on(self, label, now: float) -> None:
        """A class another server's gate showed (a kiosk handed over): shown as if it had just won, so the new
        server dreams on through a quiet moment instead of starting from "listening"."""
        self.candidate, self.streak = label, self.settings.enter_windows
        self.shown, self.shown_until = label, now + self.settings.hold_seconds

    def update(self, probs, dbfs: float, now: float, tags: Sequence[float] | None = None,
               voiced=(), taught=()) -> tuple[object | None, float]:
        """One window: `probs` (a {label: p} mapping, or a sequence in `class_names` order), its loudness in
        dBFS, the time in seconds, and (when the classifier gives them) its AudioSet tag probabilities in
        `tag_names` order. Returns (label to show or None for "listening", confidence): the current window's
        probability of the shown label, or of the top class when nothing is shown (0.0 when the window is
        background). `voiced`: the labels this window is near a taught sound's examples (rule 2's exception);
        `taught`: the labels a taught sound carries in it (rule 3's `taught_confidence`)."""
        label, conf = self.hears(probs, dbfs, now, tags, voiced, taught)
        if label is not None and label == self.candidate:
            self.streak += 1
        else:
            self.candidate, self.streak = label, (1 if label is not None else 0)
        if self.candidate is not None and (self.streak >= self.settings.enter_windows
                                           or conf >= self.settings.sure_confidence):
            self.shown, self.shown_until = self.candidate, now + self.settings.hold_seconds
        if self.shown is not None and now >= self.shown_until:
            self.shown = None
        if self.shown is None:
            return None, conf
        return self.shown, (self._prob(probs, self.shown) if label is not None or conf > 0 else 0.0)
