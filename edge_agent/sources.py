"""Audio sources behind one small interface, made by ``open_source``: mic, file, or raw s16le stdin.

Every source writes (frames, channels) float32 blocks into a ``RingBuffer`` at its own rate and channel
count; the consumer downmixes and resamples. The mic callback only copies; files and stdin are read by
a thread that waits for room in the buffer, and closes it at end of stream.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from edge_agent.config import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioConfig
from edge_agent.events import utc_iso
from edge_agent.file_time import recorded_start
from edge_agent.ring_buffer import RingBuffer

logger = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """The audio source cannot be opened or failed; one-line message for the user."""


class AudioSource(Protocol):
    """What the pipeline needs from a source."""

    sample_rate: int
    channels: int
    dtype: str  # sample type written into the ring buffer ("int16" or "float32")
    description: str
    live: bool  # a device that never ends by itself (stall detection applies)

    def start(self, ring: RingBuffer) -> None:
        """Begin writing blocks into ``ring``; close it at end of stream or on failure."""

    def stop(self) -> None:
        """Stop producing and release the device or file; safe to call twice."""


MIC_RETRY_MIN_S = 1.0  # first retry after a device loss; doubles up to the maximum
# The buffer between capture and the consumer: 10 s of 48 kHz stereo float32 is 3.8 MB. Past this it is not a
# buffer but most of the unit's MemoryMax=400M (768 kHz x 64 channels of stdin wanted 983 MB).
MAX_RING_BYTES = 128 << 20
MIC_RETRY_MAX_S = 30.0


def _sounddevice() -> Any:
    """Import sounddevice lazily: file and stdin sources work without PortAudio."""
    try:
        import sounddevice
    except OSError as error:  # sounddevice raises OSError when libportaudio is missing
        raise SourceError(
            f"PortAudio is not available ({error}); install it: sudo apt install libportaudio2"
        ) from None
    return sounddevice


def input_devices() -> list[dict[str, Any]]:
    """PortAudio's input-capable devices, each a dict with ``index``, ``name``, channels and rate."""
    sd = _sounddevice()
    return [
        dict(device, index=index)
        for index, device in enumerate(sd.query_devices())
        if device["max_input_channels"] > 0
    ]


def list_devices() -> str:
    """A readable table of input devices for ``--list-devices``."""
    devices = input_devices()
    if not devices:
        return "no audio input devices found"
    default = _sounddevice().default.device[0]
    lines = [f"{'':1} {'index':>5}  {'name':<48} {'channels':>8} {'rate':>7}"]
    lines += [
        f"{'*' if d['index'] == default else ' '} {d['index']:>5}  {d['name'][:48]:<48} "
        f"{d['max_input_channels']:>8} {d['default_samplerate']:>7.0f}"
        for d in devices
    ]
    return "\n".join(lines + ["", "use --source mic:INDEX or mic:NAME_SUBSTRING (* is the default)"])


def find_input_device(spec: str | None) -> int:
    """Device index for '' (default), an index, or a case-insensitive name substring (survives reboots)."""
    devices = input_devices()
    if not devices:
        raise SourceError("no audio input devices found (is a microphone connected?)")
    if not spec:
        default = _sounddevice().default.device[0]
        return default if default is not None and default >= 0 else devices[0]["index"]
    if spec.isdigit():
        if int(spec) in {d["index"] for d in devices}:
            return int(spec)
        raise SourceError(f"no audio input device with index {spec}; see earshot agent --list-devices")
    matches = [d for d in devices if spec.lower() in d["name"].lower()]
    if not matches:
        raise SourceError(f"no audio input device matches {spec!r}; see earshot agent --list-devices")
    if len(matches) > 1:
        logger.info("input device %r matches %d devices, using %r", spec, len(matches), matches[0]["name"])
    return int(matches[0]["index"])


class MicSource:
    """A PortAudio input stream; its callback only copies into the ring buffer.

    Samples stay int16, the format of nearly every capture device: half the copying of float32, and
    ALSA's plug layer converts S16 exactly (its float path through the ``file`` plugin drops frames).
    """

    live = True
    dtype = "int16"

    def __init__(self, device_spec: str | None, block_size: int, preferred_rate: int) -> None:
        self._sd = _sounddevice()
        self.device_spec = device_spec
        self.device = find_input_device(device_spec)
        info = self._sd.query_devices(self.device)
        self.sample_rate, self.channels = self._pick_format(
            preferred_rate, int(info["default_samplerate"]), int(info["max_input_channels"])
        )
        self.block_size = block_size
        self.description = f"mic {self.device} ({info['name']}) at {self.sample_rate} Hz"
        self._stream: Any = None
        self._ring: RingBuffer | None = None
        self.failures = 0  # times the device went away; the pipeline turns growth into a metric
        self._stopping = threading.Event()

    def _pick_format(self, preferred: int, default: int, max_channels: int) -> tuple[int, int]:
        """Mono at the model's rate if the device takes it (no resampling), else the nearest that works.

        A raw ``hw:`` device may accept only its native channel count; the consumer downmixes then.
        """
        for channels in dict.fromkeys((1, min(2, max_channels), max_channels)):
            for rate in dict.fromkeys((preferred, default)):
                try:
                    self._sd.check_input_settings(
                        device=self.device, channels=channels, samplerate=rate, dtype=self.dtype
                    )
                    return rate, channels
                except Exception:  # PortAudioError or ValueError: this combination is unsupported
                    continue
        return default, 1  # start() reports PortAudio's own reason

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio thread: copy and count; nothing else may happen here."""
        ring = self._ring
        if ring is None:  # the stream opens only after start() set the ring: never true, but typed
            return
        if status.input_overflow:
            ring.note_overrun()
        ring.write(indata)

    def _finished(self) -> None:
        """PortAudio says the stream ended: the device went away unless we stopped it; go and find it."""
        if self._stopping.is_set() or self._ring is None or self._ring.closed:
            return
        self.failures += 1
        logger.warning("audio device %s stopped delivering audio; retrying until it returns", self.device)
        threading.Thread(target=self._reconnect, name="earshot-mic-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        """Reopen the device (found again by its name, as USB re-enumeration may change its index)."""
        delay = MIC_RETRY_MIN_S
        while not self._stopping.wait(delay):
            try:
                self._rescan()
                self.device = find_input_device(self.device_spec)
                self._open()
            except Exception as error:  # SourceError, PortAudioError: still gone; try again later
                logger.debug("audio device %r not back yet: %s", self.device_spec, error)
                delay = min(delay * 2, MIC_RETRY_MAX_S)
                continue
            logger.info("audio device %s is back; capture resumed", self.device)
            return

    def _rescan(self) -> None:
        """PortAudio lists devices once per initialisation: re-initialise so a re-plugged mic is seen."""
        old, self._stream = self._stream, None
        if old is not None:
            old.close(ignore_errors=True)
        if hasattr(self._sd, "_terminate"):
            self._sd._terminate()
            self._sd._initialize()

    def _open(self) -> None:
        """Open and start a stream in the format chosen at start-up (the consumer's resampler expects it)."""
        stream = self._sd.InputStream(
            device=self.device,
            channels=self.channels,
            samplerate=self.sample_rate,
            dtype=self.dtype,
            blocksize=self.block_size,
            callback=self._callback,
            finished_callback=self._finished,
        )
        stream.start()
        self._stream = stream

    def start(self, ring: RingBuffer) -> None:
        """Open and start the input stream."""
        self._ring = ring
        try:
            self._open()
        except Exception as error:  # sounddevice.PortAudioError, ValueError
            raise SourceError(f"cannot open audio device {self.device}: {error}") from None

    def stop(self) -> None:
        """Stop and close the stream (and any reconnect attempt)."""
        self._stopping.set()
        stream, self._stream = self._stream, None
        if self._ring is not None:
            self._ring.close()
        if stream is not None:
            stream.close(ignore_errors=True)


class _ThreadSource:
    """Base for sources read by a thread with back-pressure (file, stdin)."""

    live = False
    dtype = "float32"
    sample_rate: int
    channels: int
    description: str

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ring: RingBuffer | None = None

    def start(self, ring: RingBuffer) -> None:
        """Start the reader thread."""
        self._ring = ring
        self._thread = threading.Thread(target=self._run, args=(ring,), name="earshot-source", daemon=True)
        self._thread.start()

    def _run(self, ring: RingBuffer) -> None:
        """Thread body: read until the end, then close the ring (with the error, if any)."""
        error = None
        try:
            for block in self._blocks():
                if self._stop.is_set() or not ring.write(block, wait=True):
                    break
        except Exception as failure:  # the thread boundary: report, never die silently
            logger.debug("source read failed", exc_info=True)
            error = f"cannot read {self.description}: {failure}"
        ring.close(error=error)

    def _blocks(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the reader to stop (closing the ring frees a writer waiting for room) and wait briefly."""
        self._stop.set()
        if self._ring is not None:
            self._ring.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)


class FileSource(_ThreadSource):
    """A wav/flac/ogg file, paced in real time or, with ``fast``, as fast as the consumer takes it."""

    def __init__(self, path: str, block_size: int, fast: bool) -> None:
        super().__init__(block_size)
        import soundfile

        self.path, self.fast = path, fast
        if not Path(path).is_file():
            raise SourceError(f"audio file not found: {path}")
        try:
            info = soundfile.info(path)
        except Exception as error:  # soundfile.LibsndfileError (RuntimeError) for corrupt/unknown formats
            raise SourceError(f"cannot read audio file {path}: {_first_line(error)}") from None
        self.sample_rate, self.channels = int(info.samplerate), int(info.channels)
        if not MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE:  # a broken or hostile header
            raise SourceError(
                f"audio file {path}: its header says {self.sample_rate} Hz, outside the "
                f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz the agent reads"
            )
        self.description = f"file {path}"
        self.recorded_at = self._recorded_at()

    def _recorded_at(self) -> float | None:
        """Unix time of the file's first sample when its metadata says (file_time.py); logged either way."""
        found = recorded_start(self.path)
        if found is None:
            logger.info(
                "%s has no recorded start time: event times count from when reading began; "
                "each event's source.started_s/ended_s give its offset into the file",
                self.path,
            )
            return None
        logger.info(
            "%s was recorded from %s (%s): event times count from then",
            self.path,
            utc_iso(found[0]),
            found[1],
        )
        return found[0]

    def position(self, started_s: float, ended_s: float | None) -> dict[str, Any]:
        """An event's ``source`` block: the file, the offsets in it, and what its times count from."""
        return {
            "kind": "file",
            "name": Path(self.path).name,
            "started_s": round(started_s, 3),
            "ended_s": None if ended_s is None else round(ended_s, 3),
            "clock": "file" if self.recorded_at is not None else "read",
        }

    def _blocks(self) -> Any:
        """Blocks from the file, sleeping to real time unless fast."""
        import soundfile

        started, sent = time.monotonic(), 0
        for block in soundfile.blocks(self.path, blocksize=self.block_size, dtype="float32", always_2d=True):
            if not self.fast:
                self._stop.wait(max(0.0, started + (sent + len(block)) / self.sample_rate - time.monotonic()))
            sent += len(block)
            yield block


class StdinSource(_ThreadSource):
    """Raw interleaved s16le PCM on stdin (``arecord -f S16_LE ... | earshot agent --source -``)."""

    dtype = "int16"
    live = True  # usually a capture process: a pipe that stops delivering is a stalled microphone

    def __init__(self, rate: int, channels: int, block_size: int, stream: BinaryIO | None = None) -> None:
        super().__init__(block_size)
        self.sample_rate, self.channels = rate, channels
        # Unbuffered FileIO on fd 0: a BufferedReader's lock, held by the blocked reader thread, aborts the
        # interpreter at shutdown (SIGTERM while arecord is still writing).
        self._stream = (
            stream if stream is not None else open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
        )
        self.description = f"stdin (s16le, {rate} Hz, {channels} ch)"

    def _blocks(self) -> Any:
        """Whole frames from the byte stream; a trailing partial frame is dropped."""
        frame_bytes = 2 * self.channels
        leftover = b""
        while True:
            data = self._stream.read(self.block_size * frame_bytes)
            if not data:
                return
            data = leftover + data
            usable = len(data) - len(data) % frame_bytes
            data, leftover = data[:usable], data[usable:]
            if data:
                yield np.frombuffer(data, dtype="<i2").reshape(-1, self.channels)  # (frames, channels)


def _first_line(error: BaseException) -> str:
    """The first line of an exception message, for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def ring_frames(config: AudioConfig, rate: int) -> int:
    """Frames of the ring buffer for a source at ``rate``: ``ring_seconds`` of audio, at least 4 blocks."""
    return max(int(config.ring_seconds * rate), 4 * config.block_size)


def check_ring_size(config: AudioConfig, source: AudioSource) -> None:
    """SourceError (one line naming the keys) when the source's ring buffer would exceed MAX_RING_BYTES."""
    size = ring_frames(config, source.sample_rate) * source.channels * np.dtype(source.dtype).itemsize
    if size > MAX_RING_BYTES:
        raise SourceError(
            f"audio.ring_seconds: a ring buffer of {config.ring_seconds:g} s (at least 4 audio.block_size "
            f"blocks) of {source.sample_rate} Hz x {source.channels} channels needs {size / 1e6:.0f} MB, "
            f"over {MAX_RING_BYTES >> 20} MiB; lower audio.ring_seconds or audio.block_size, or the rate or "
            "the channels"
        )


def open_source(config: AudioConfig, preferred_rate: int, stdin: BinaryIO | None = None) -> AudioSource:
    """``mic``/``mic:NAME_OR_INDEX``, ``-`` (stdin) or a file path -> an unstarted source."""
    spec = config.source
    source: AudioSource
    if spec == "-":
        source = StdinSource(config.stdin_rate, config.stdin_channels, config.block_size, stdin)
    elif spec == "mic" or spec.startswith("mic:"):
        source = MicSource(spec[4:] or None, config.block_size, preferred_rate)
    else:
        source = FileSource(spec, config.block_size, config.fast)
    check_ring_size(config, source)
    return source
