"""The demo corpus's script: what each video shows, step by step, and the narration that says it.

A video is a series of *steps*. Each step shows one scene (a number of shapes of one colour, at one
place, still or moving/growing/shrinking) on the video's own background, and short sentences of
espeak-ng speech describe that scene while it is on screen. Three narration styles (NARRATIONS):
- "scenes" (the demo's): 12-22 steps of 3-5 s, about one TVTS window each, every sentence naming what
  is on screen (colour, shape, count, position, motion) and nothing else: no step numbers, no
  "now/then/first", no sentence about another step. A transcript can only be placed in time by looking
  at the frames, which is what TVTS is meant to learn.
- "how-to": 10-18 steps of 3-6 s, each announced first ("Step four."), the way how-to videos count
  their steps: the script carries its own order cue (a sorter learns it from the text alone).
- "plain": 6-10 steps of 5-9.4 s, 2-4 sentences each and no announcement (the tests' corpus); some
  sentences still refer to the previous step ("The white squares are gone.") or mark a new one
  ("Now there are ...").
Consecutive scenes differ in shape or colour and in at least one more of (shape, colour, count,
position), so the order of the steps can be read off the frames, and the narration of step k names
what is on screen during step k.

Timing is exact, not estimated: each sentence is synthesized once with libespeak-ng (in-process,
through its C API) and the library's WORD events give the sample at which every word starts; a word
ends where the next one starts, minus trailing silence. Step boundaries fall on multiples of 0.2 s,
i.e. on frame boundaries at 15 fps, so the frames, the audio and the captions share one clock.

Everything is a pure function of (seed, video index): video i of a 24-video corpus is the same as
video i of a 6-video corpus made with the same seed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import random
import re
import string
from dataclasses import asdict, dataclass, field

import numpy as np

SAMPLE_RATE = 22050  # espeak-ng's native rate; the muxed AAC keeps it (mono).
FPS = 15
WIDTH, HEIGHT = 320, 240
TIME_GRID = 0.2  # step boundaries are multiples of this (3 frames at 15 fps)

SHAPES = ("circle", "square", "triangle", "diamond", "star")
COLOURS = {
    "red": (225, 35, 35),
    "blue": (40, 95, 235),
    "green": (35, 185, 70),
    "yellow": (245, 215, 35),
    "orange": (250, 140, 20),
    "purple": (155, 55, 210),
    "white": (245, 245, 245),
    "pink": (250, 120, 185),
}
# Anchor (x, y) as fractions of the frame, and how the narration says it.
POSITIONS = {
    "left": ((0.24, 0.5), "on the left"),
    "right": ((0.76, 0.5), "on the right"),
    "middle": ((0.5, 0.5), "in the middle"),
    "top": ((0.5, 0.26), "at the top"),
    "bottom": ((0.5, 0.74), "at the bottom"),
    "top left": ((0.22, 0.25), "in the top left corner"),
    "top right": ((0.78, 0.25), "in the top right corner"),
    "bottom left": ((0.22, 0.75), "in the bottom left corner"),
    "bottom right": ((0.78, 0.75), "in the bottom right corner"),
}
# A move ends at the named place and starts on the opposite side of the frame.
MOVES = {"left": ("right", "left"), "right": ("left", "right"), "up": ("bottom", "top"), "down": ("top", "bottom")}
MOTIONS = ("still", "still", "still", "left", "right", "up", "down", "grow", "shrink")
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
STEP_NUMBERS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                "sixteen seventeen eighteen nineteen twenty").split()
VOICES = ("en-us", "en-us", "en", "en-us+f3", "en-us+m3", "en+f2")


@dataclass
class Scene:
    shape: str
    colour: str
    count: int
    position: str  # where the shapes are (for a move: where they end)
    motion: str  # still | left | right | up | down | grow | shrink
    size: int  # shape radius in pixels (at the step start for grow/shrink)

    def describe(self) -> str:
        """A plain description of what is on screen (the `visual` field of narration.jsonl)."""
        what = f"{self.count} {self.colour} {self.shape}{'s' if self.count > 1 else ''}"
        if self.motion in MOVES:
            return f"{what} moving {self.motion}, from the {MOVES[self.motion][0]} to the {self.position}"
        if self.motion in ("grow", "shrink"):
            return f"{what} {'growing' if self.motion == 'grow' else 'shrinking'} {POSITIONS[self.position][1]}"
        return f"{what} {POSITIONS[self.position][1]}, radius {self.size}px"


@dataclass
class Word:
    word: str  # the token as written in the script (capitals and punctuation kept)
    start: float
    end: float


@dataclass
class Step:
    start: float
    end: float
    scene: Scene
    sentences: list[str]
    announced: bool = False  # sentences[0] is "Step <n>."
    words: list[Word] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.sentences)

    @property
    def main_sentence(self) -> str:
        """What happens on screen, e.g. "A red diamond moves to the left." """
        return self.sentences[1 if self.announced else 0]


@dataclass
class VideoScript:
    index: int
    video_id: str
    youtube_id: str
    title: str
    voice: str
    rate: int
    background: dict  # parameters of the static background (see demo_render)
    steps: list[Step]
    duration: float
    audio: np.ndarray | None = None  # int16 mono at SAMPLE_RATE, len == duration * SAMPLE_RATE

    @property
    def words(self) -> list[Word]:
        return [w for step in self.steps for w in step.words]

    def narration_record(self, caption_kind: str) -> dict:
        return {
            "video_id": self.video_id,
            "duration": self.duration,
            "caption_kind": caption_kind,
            "voice": self.voice,
            "steps": [
                {
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "visual": s.scene.describe(),
                    "scene": asdict(s.scene),
                    "sentences": s.sentences,
                }
                for s in self.steps
            ],
            "words": [asdict(w) for w in self.words],
        }


def normalize_words(text: str) -> list[str]:
    """Lower-case tokens without punctuation: how to compare captions, shard texts and the script."""
    return [t for t in re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split() if t]


# --------------------------------------------------------------------------------------------------
# espeak-ng through its C API (libespeak-ng.so.1): audio plus the exact sample where each word starts.

class _Event(ctypes.Structure):
    # espeak_EVENT from speak_lib.h
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1
_AUDIO_OUTPUT_SYNCHRONOUS, _POS_CHARACTER, _CHARS_UTF8, _RATE = 2, 1, 1, 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakError(RuntimeError):
    pass


class Speaker:
    """In-process espeak-ng: `say(text) -> (int16 audio, [(char_offset, start_sample)] per word)`."""

    _instance: "Speaker | None" = None

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self._lib = ctypes.CDLL(name)
        except OSError as exc:
            raise EspeakError(
                f"libespeak-ng is not installed ({exc}): install the espeak-ng system package "
                "(apt-get install espeak-ng, or run `make setup`)"
            ) from exc
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
        if rate != SAMPLE_RATE:
            raise EspeakError(f"espeak-ng initialised at {rate} Hz, expected {SAMPLE_RATE}")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []
        self._callback = _SYNTH_CALLBACK(self._on_audio)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: tuple[str, int] | None = None

    @classmethod
    def get(cls) -> "Speaker":
        if cls._instance is None:
            cls._instance = Speaker()
        return cls._instance

    def _on_audio(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_WORD:
                self._events.append((event.text_position, event.length, event.sample))
            i += 1
        return 0

    def say(self, text: str, voice: str, rate: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        if self._voice != (voice, rate):
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(_RATE, rate, 0)
            self._voice = (voice, rate)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise EspeakError(f"espeak_Synth failed with status {status} on {text!r}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        # Text positions are 1-based byte offsets; the script is ASCII, so they are character offsets too.
        return audio, [(pos - 1, sample) for pos, _, sample in self._events]


def _speech_bounds(audio: np.ndarray, threshold: int = 250) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > threshold)
    if loud.size == 0:
        return 0, len(audio)
    return int(loud[0]), int(loud[-1]) + 1


@dataclass
class Utterance:
    """One synthesized sentence, trimmed to its speech, with word offsets in samples from its start."""

    text: str
    audio: np.ndarray
    words: list[tuple[str, int, int]]  # token as written, start sample, end sample

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def synthesize(text: str, voice: str, rate: int) -> Utterance:
    """Speak `text`; word starts come from espeak's WORD events (exact, in samples).

    espeak sometimes speaks two tokens as one word ("There are"): the event covers the first token and
    the time up to the next event is shared among the covered tokens by their letter counts.
    """
    audio, events = Speaker.get().say(text, voice, rate)
    tokens = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    lo, hi = _speech_bounds(audio)
    event_starts: dict[int, int] = {}  # token index -> sample where its word starts
    for offset, sample in events:
        for k, (_, a, b) in enumerate(tokens):
            if a <= offset < b and k not in event_starts:
                event_starts[k] = max(sample, lo)
                break
    if 0 not in event_starts:
        raise EspeakError(f"espeak-ng reported no word at the start of {text!r}")
    anchored = sorted(event_starts) + [len(tokens)]
    starts = [0] * len(tokens)
    for first, nxt in zip(anchored, anchored[1:]):
        a, b = event_starts[first], event_starts.get(nxt, hi)
        letters = [len(tokens[k][0]) for k in range(first, nxt)]
        done = 0
        for k, n in zip(range(first, nxt), letters):
            starts[k] = int(a + (b - a) * done / sum(letters))
            done += n
    bounds = starts + [hi]
    words = []
    for k, (token, _, _) in enumerate(tokens):
        start, next_start = bounds[k], max(bounds[k + 1], bounds[k] + 1)
        _, speech_end = _speech_bounds(audio[start:next_start])
        end = start + max(speech_end, int(0.05 * SAMPLE_RATE))
        words.append((token, start - lo, min(end, hi) - lo))
    return Utterance(text, audio[lo:hi], words)


# --------------------------------------------------------------------------------------------------
# Scenes and sentences

def _plural(shape: str, count: int) -> str:
    return shape + ("s" if count > 1 else "")


def _subject(scene: Scene) -> str:
    """ "A red circle" / "Three blue squares" """
    noun = f"{scene.colour} {_plural(scene.shape, scene.count)}"
    if scene.count == 1:
        return f"{'An' if noun[0] in 'aeiou' else 'A'} {noun}"
    return f"{NUMBERS[scene.count].capitalize()} {noun}"


def _verb(scene: Scene, singular: str, plural: str) -> str:
    return singular if scene.count == 1 else plural


def _moving(s: Scene) -> tuple[str, str]:
    """(direction, main sentence) of a moving scene: ("to the left", "A red star moves to the left.")."""
    direction = "up" if s.motion == "up" else "down" if s.motion == "down" else f"to the {s.motion}"
    return direction, f"{_subject(s)} {_verb(s, 'moves', 'move')} {direction}."


def _resizing(s: Scene) -> tuple[str, str]:
    """(change, main sentence) of a growing or shrinking scene: ("bigger", "Two blue squares grow on the left.")."""
    verb = _verb(s, "grows", "grow") if s.motion == "grow" else _verb(s, "shrinks", "shrink")
    change = "bigger" if s.motion == "grow" else "smaller"
    return change, f"{_subject(s)} {verb} {POSITIONS[s.position][1]}."


def sentences_for(scene: Scene, previous: Scene | None, rng: random.Random) -> list[str]:
    """The main sentence (what happens) first, then 1-4 further true statements in random order."""
    s, one = scene, scene.count == 1
    subject, where = _subject(s), POSITIONS[s.position][1]
    it, the = ("It" if one else "They"), f"the {_plural(s.shape, s.count)}"
    if s.motion in MOVES:
        direction, main = _moving(s)
        extra = [f"{it} {_verb(s, 'keeps', 'keep')} moving {direction}."]
    elif s.motion in ("grow", "shrink"):
        change, main = _resizing(s)
        extra = [f"{it} {_verb(s, 'gets', 'get')} {change} and {change}.", f"{it} {_verb(s, 'stays', 'stay')} {where}."]
    else:
        main = rng.choice([f"{subject} {_verb(s, 'appears', 'appear')} {where}.",
                           f"Now there {_verb(s, 'is', 'are')} {subject.lower()} {where}."])
        size = "big" if s.size >= 30 else "small"
        extra = [f"{it} {_verb(s, 'stays', 'stay')} {where}.",
                 f"{the.capitalize()} {_verb(s, 'is', 'are')} {size}."]
    extra.append(f"{the.capitalize()} {_verb(s, 'is', 'are')} {s.colour}.")
    extra.append(f"There is just one {s.shape}." if one else f"There are {NUMBERS[s.count]} of them.")
    if previous is not None and (previous.shape, previous.colour) != (s.shape, s.colour):
        extra.append(f"The {previous.colour} {_plural(previous.shape, previous.count)} "
                     f"{'is' if previous.count == 1 else 'are'} gone.")
    rng.shuffle(extra)
    return [main] + extra


def self_contained_sentences(scene: Scene, rng: random.Random) -> list[str]:
    """The "scenes" narration: the main sentence, then 1-3 more, each naming the colour and the shape again
    (a window that hears only the second sentence still knows which scene it belongs to) and none
    referring to another step or to time ("now", "gone", "keep moving")."""
    s = scene
    subject, where = _subject(s), POSITIONS[s.position][1]
    the = f"The {s.colour} {_plural(s.shape, s.count)}"
    if s.motion in MOVES:
        start, end = MOVES[s.motion]
        main = _moving(s)[1]
        extra = [f"{the} {_verb(s, 'goes', 'go')} from the {start} to the {end}."]
    elif s.motion in ("grow", "shrink"):
        change, main = _resizing(s)
        extra = [f"{the} {_verb(s, 'gets', 'get')} {change}."]
    else:
        main = f"{subject} {_verb(s, rng.choice(('appears', 'sits')), rng.choice(('appear', 'sit')))} {where}."
        extra = [f"{the} {_verb(s, 'is', 'are')} {'big' if s.size >= 30 else 'small'}.",
                 f"{the} {_verb(s, 'stays', 'stay')} {where}."]
    extra.append(f"There {_verb(s, 'is', 'are')} {NUMBERS[s.count]} {s.colour} {_plural(s.shape, s.count)}.")
    rng.shuffle(extra)
    return [main] + extra


def next_scene(previous: Scene | None, rng: random.Random) -> Scene:
    """A scene that differs from `previous` in shape or colour and in at least two attributes."""
    while True:
        count = rng.choice((1, 1, 2, 3, 4, 5))
        motion = rng.choice(MOTIONS)
        if motion in MOVES:
            position = MOVES[motion][1]
        else:
            position = rng.choice(list(POSITIONS))
        size = rng.randint(32, 46) if count == 1 else rng.randint(16, 24) if count <= 3 else rng.randint(12, 18)
        scene = Scene(rng.choice(SHAPES), rng.choice(list(COLOURS)), count, position, motion, size)
        if previous is None:
            return scene
        changed = sum(getattr(scene, a) != getattr(previous, a) for a in ("shape", "colour", "count", "position"))
        if changed >= 2 and (scene.shape != previous.shape or scene.colour != previous.colour):
            return scene


def _fake_youtube_id(rng: random.Random, dash: bool) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    body = "".join(rng.choice(alphabet) for _ in range(10))
    return ("-" if dash else rng.choice(string.ascii_letters + string.digits)) + body


def _grid_up(seconds: float) -> float:
    return round(np.ceil(seconds / TIME_GRID - 1e-9) * TIME_GRID, 1)


LEAD_IN, SENTENCE_GAP, TAIL = 0.3, 0.35, 0.35
MIN_VIDEO, MAX_VIDEO = 41.0, 89.0


@dataclass(frozen=True)
class Narration:
    steps: tuple[int, int]          # how many steps a video has (inclusive range)
    step_seconds: tuple[float, float]  # shortest step; longest a step grows by optional sentences
    announce: bool                  # each step starts with "Step <n>."
    self_contained: bool = False    # every sentence names its own scene; none refers to another step


NARRATIONS = {"scenes": Narration((12, 22), (3.0, 5.0), False, self_contained=True),
              "how-to": Narration((10, 18), (3.0, 5.6), True),
              "plain": Narration((6, 10), (5.0, 9.4), False)}
DEFAULT_NARRATION = "scenes"


def video_rng(seed: int, index: int, purpose: str = "video") -> random.Random:
    return random.Random(f"tvts-demo/{purpose}/{seed}/{index}")


def random_background(rng: random.Random) -> dict:
    """The parameters of a video's static background (pipeline.demo.render.background draws them)."""
    return {
        "top": [rng.randint(10, 90) for _ in range(3)],
        "bottom": [rng.randint(10, 90) for _ in range(3)],
        "stripe_angle": rng.uniform(0, 180),
        "stripe_period": rng.randint(18, 60),
        "stripe_strength": rng.randint(8, 22),
        "grid": rng.random() < 0.4,
    }


def make_script(seed: int, index: int, with_audio: bool = True, narration: str = DEFAULT_NARRATION) -> VideoScript:
    """Plan video `index` of the corpus made with `seed`, synthesize its speech and lay out the timeline."""
    style = NARRATIONS[narration]
    min_step, max_step = style.step_seconds
    rng = video_rng(seed, index)
    voice, rate = rng.choice(VOICES), rng.randint(150, 180)
    n_steps = rng.randint(*style.steps)
    background = random_background(rng)
    steps: list[Step] = []
    utterances: list[list[Utterance]] = []
    previous: Scene | None = None
    t = 0.0
    for _ in range(n_steps):
        scene = next_scene(previous, rng)
        announcement = [f"Step {STEP_NUMBERS[len(steps)]}."] if style.announce else []
        described = self_contained_sentences(scene, rng) if style.self_contained else sentences_for(scene, previous, rng)
        candidates = announcement + described
        required = len(announcement) + 1           # the announcement and the main sentence
        target = rng.uniform(min_step, max_step)
        chosen: list[Utterance] = []
        length = LEAD_IN + TAIL
        for k, sentence in enumerate(candidates):
            utt = synthesize(sentence, voice, rate)
            extra = utt.seconds + (SENTENCE_GAP if chosen else 0.0)
            # Always say the announcement and the main sentence; then add sentences while they fit the
            # target (or the step is still short), never past the longest step.
            if k >= required and (length + extra > max_step or (length + extra > target and length >= min_step)):
                break
            chosen.append(utt)
            length += extra
        duration = max(_grid_up(length), min_step)
        steps.append(Step(start=round(t, 1), end=round(t + duration, 1), scene=scene,
                          sentences=[u.text for u in chosen], announced=style.announce))
        utterances.append(chosen)
        t += duration
        previous = scene
    # Keep within the length range: drop trailing steps of a long video (never below the fewest)...
    while len(steps) > style.steps[0] and steps[-1].end > MAX_VIDEO + 1e-6:
        steps.pop()
        utterances.pop()
    # ...and pad short videos with silence at the step ends (round robin) until they reach the minimum length.
    k = 0
    while sum(s.end - s.start for s in steps) < MIN_VIDEO - 1e-6:
        steps[k % len(steps)].end = round(steps[k % len(steps)].end + TIME_GRID, 1)
        k += 1
    t = 0.0
    for step in steps:
        length = step.end - step.start
        step.start, step.end = round(t, 1), round(t + length, 1)
        t += length
    duration = round(t, 1)
    if duration > MAX_VIDEO + 1e-6:  # cannot happen: the fewest steps at their longest fit; keep it honest
        raise AssertionError(f"video {index}: {duration}s is longer than {MAX_VIDEO}s")

    total = int(round(duration * SAMPLE_RATE))
    audio = np.zeros(total, np.int16)
    for step, chosen in zip(steps, utterances):
        cursor = int(round((step.start + LEAD_IN) * SAMPLE_RATE))
        for utt in chosen:
            audio[cursor : cursor + len(utt.audio)] = utt.audio
            for token, a, b in utt.words:
                step.words.append(Word(token, round((cursor + a) / SAMPLE_RATE, 3), round((cursor + b) / SAMPLE_RATE, 3)))
            cursor += len(utt.audio) + int(SENTENCE_GAP * SAMPLE_RATE)
        if step.words and step.words[-1].end > step.end:
            raise AssertionError(f"video {index}: speech of step at {step.start}s runs past its end")

    video_id = f"demo-{index:03d}"
    youtube_id = _fake_youtube_id(rng, dash=index % 5 == 2)
    first = steps[0].scene
    title = f"Shapes and colours {index + 1}: {_subject(first).lower()} and {len(steps) - 1} more scenes"
    return VideoScript(index, video_id, youtube_id, title, voice, rate, background, steps, duration,
                       audio if with_audio else None)
