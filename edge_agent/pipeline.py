"""The agent's data path: source -> ring buffer -> one consumer thread (windows, log-mel, model, detector)
-> publishers.

The source (PortAudio callback or a reader thread) only fills the ring buffer. One consumer thread does
everything else, so the model, detector and outputs never run concurrently with each other. The pipeline
produces windows, scores and detections; what happens to an event is each ``Publisher``'s business.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.config import AgentConfig
from edge_agent.detector import Detection, Detector, resolve_thresholds
from edge_agent.events import ModelRef, make_event
from edge_agent.frontend import StreamingLogMel
from edge_agent.level_reporting import LevelReport, SoundLevels
from edge_agent.metrics import AgentMetrics
from edge_agent.onnx_model import OnnxModel
from edge_agent.publishers.base import Publisher
from edge_agent.resample import StreamResampler, downmix
from edge_agent.ring_buffer import RingBuffer
from edge_agent.sources import AudioSource, ring_frames
from edge_agent.windowing import Window, Windower, hop_samples

logger = logging.getLogger(__name__)

READ_FRAMES = 4096  # consumer read size; any value gives the same scores (the frame contract)
STALL_AFTER_S = 5.0  # /healthz turns 503 when a live source delivered nothing for this long
STATUS_EVERY_S = 5.0  # how often outputs get the agent status (HA's diagnostic entities show it)
RTF_SMOOTHING = 0.05  # weight of the newest window in the real-time-factor gauge


@dataclass(frozen=True)
class WindowResult:
    """What one window produced, for tests, ``earshot bench`` and ``earshot listen``."""

    window: Window
    time_s: float  # stream time at the window's end
    scores: np.ndarray  # (n_classes,) label scores (the model's softmax or sigmoid)
    frontend_s: float
    model_s: float
    detections: tuple[Detection, ...]


class Pipeline:
    """Runs one source through one model until end of stream or ``stop()``; ``run()`` gives the exit code."""

    def __init__(
        self,
        config: AgentConfig,
        model: OnnxModel,
        source: AudioSource,
        metrics: AgentMetrics | None = None,
        publishers: Sequence[Publisher] = (),
        on_window: Callable[[WindowResult], None] | None = None,
        stall_after_s: float = STALL_AFTER_S,
    ) -> None:
        params = model.frontend
        self.config, self.model, self.source = config, model, source
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.publishers, self.on_window = list(publishers), on_window
        self.rate = params.sample_rate
        self.hop = hop_samples(config.audio.hop_seconds, params.sample_rate, params.hop_length)
        if abs(self.hop / self.rate - config.audio.hop_seconds) > 1e-9:
            logger.info(
                "hop %.3f s rounded to %.3f s (%d STFT frames) so windows share STFT frames",
                config.audio.hop_seconds,
                self.hop / self.rate,
                self.hop // params.hop_length,
            )
        self.windower = Windower(params.window_samples, self.hop)
        self.features = StreamingLogMel(params, self.hop)
        self.resampler = StreamResampler(source.sample_rate, params.sample_rate)
        self.detector = Detector(model.labels, config.detector, model.metadata.thresholds)
        self.ring = RingBuffer(ring_frames(config.audio, source.sample_rate), source.channels, source.dtype)
        self.model_ref = ModelRef(model.metadata.name, model.metadata.version, model.sha256)
        self.stall_after_s = stall_after_s
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.clock_origin = time.time()  # Unix time of stream time zero
        self._started = time.monotonic()
        self._last_audio = 0.0  # monotonic time of the last block (0: none yet)
        self._overruns_seen = 0
        self.lost_seconds = 0.0  # audio dropped by overruns: keeps the stream clock on the wall clock
        self._rtf = 0.0
        self.nonfinite_blocks = 0  # blocks that carried NaN/Inf samples (replaced by silence)
        self._source_failures_seen = 0
        # Children resolved once: a labels() lookup per class per window costs more than the model.
        self.metrics.init_labels(model.labels)
        self._score_gauges = [self.metrics.last_score.labels(label=label) for label in model.labels]
        self.status_every_s = STATUS_EVERY_S
        self._next_status = 0.0  # monotonic time of the next status report (0: at once)
        self._offered: tuple[OnnxModel, float] | None = None  # a verified model waiting for the next window
        self._heard = 0  # model-rate samples heard when the current window completed
        self.levels = (
            SoundLevels(
                config.levels,
                self.rate,
                config.device_id,
                self.metrics,
                lambda stream_s: self.clock_origin + stream_s,
            )
            if config.levels.enabled
            else None
        )
        self._consumer = threading.Thread(target=self._consume, name="earshot-consumer", daemon=True)

    # --- lifecycle (main thread) ---

    def run(self) -> int:
        """Start outputs, source and consumer, wait for the end (or ``stop``), shut down; 0 ok, 1 failure."""
        self._set_model_metrics()
        started: list[Publisher] = []
        try:
            for publisher in self.publishers:
                publisher.start()
                started.append(publisher)
            return self._run_stream()
        finally:
            for publisher in started:  # in order: clip capture writes its clips before the network outputs
                publisher.close()

    def _run_stream(self) -> int:
        """Source and consumer until the end of the stream or ``stop``."""
        self.clock_origin, self._started = self._clock_origin(), time.monotonic()
        self.source.start(self.ring)
        self._consumer.start()
        while self._consumer.is_alive() and not self.stop_event.is_set():
            self._consumer.join(timeout=0.2)  # short joins keep the main thread responsive to signals
        self.source.stop()
        self._consumer.join(timeout=10.0)
        if self._consumer.is_alive():
            logger.error("consumer thread did not stop within 10 s")
            return 1
        return 1 if self.error else 0

    def _clock_origin(self) -> float:
        """Unix time of stream time zero: a file's recorded start when its metadata says, else now."""
        recorded = getattr(self.source, "recorded_at", None)  # FileSource only (file_time.py)
        return recorded if recorded is not None else time.time()

    def stop(self) -> None:
        """Request shutdown (any thread; SIGINT/SIGTERM via edge_agent.signals); open episodes end."""
        self.stop_event.set()

    def offer_model(self, model: OnnxModel) -> None:
        """Hand over a verified model (any thread); the consumer swaps it in before its next window."""
        self._offered = (model, time.perf_counter())

    def health(self) -> tuple[bool, str]:
        """For /healthz: unhealthy when the model is not loaded, a live source stalled or an output broke."""
        if self.model is None or self.model.session is None:
            return False, "model not loaded"
        if self.error:
            return False, self.error
        for publisher in self.publishers:
            healthy, reason = publisher.health()
            if not healthy:
                return False, f"{publisher.name}: {reason}"
        silent_for = self._stalled_for()
        if silent_for is not None:
            return False, f"audio stalled: no samples for {silent_for:.1f} s"
        return True, "ok"

    def _stalled_for(self) -> float | None:
        """Seconds a live source has delivered nothing, once that is past ``stall_after_s``; else None."""
        silent_for = time.monotonic() - (self._last_audio or self._started)
        return silent_for if self.source.live and silent_for > self.stall_after_s else None

    def _set_model_metrics(self) -> None:
        """Model info and the ungated flag."""
        meta = self.model.metadata
        info = {"name": meta.name, "version": meta.version, "sha256": self.model.sha256}
        self.metrics.model_info.info(info)
        gated = self.model.check.gated if self.model.check is not None else False
        self.metrics.model_ungated.set(0 if gated else 1)

    # --- consumer thread ---

    def _consume(self) -> None:
        """Thread body: process blocks until the stream ends or stop is requested, then flush."""
        try:
            while not self.stop_event.is_set():
                block = self.ring.read(READ_FRAMES, timeout=0.25)
                self._report_status()
                self._count_source_failures()
                if block is None:
                    break
                if len(block):
                    self._process_block(block)
            self._flush(end_of_stream=not self.stop_event.is_set())
        except Exception as error:  # the consumer's boundary: log it, fail the run, never hang
            logger.exception("audio processing failed")
            self.error = f"audio processing failed: {error}"
        if self.ring.error and not self.error:
            self.error = self.ring.error
            self.metrics.audio_source_errors.inc()

    def _report_status(self) -> None:
        """Every ``status_every_s``: the agent status to every output (``publish_state("agent", ...)``)."""
        if time.monotonic() < self._next_status:
            return
        self._next_status = time.monotonic() + self.status_every_s
        healthy, reason = self.health()
        meta = self.model.metadata
        status = {
            "healthy": healthy,
            "reason": reason,
            "audio_stalled": self._stalled_for() is not None,
            "model": {"name": meta.name, "version": meta.version, "sha256": self.model.sha256},
        }
        self._publish_state("agent", status)

    def _count_source_failures(self) -> None:
        """A device that went away (and is being retried) is counted and logged once per loss."""
        failures = getattr(self.source, "failures", 0)
        if failures > self._source_failures_seen:
            self.metrics.audio_source_errors.inc(failures - self._source_failures_seen)
            self._source_failures_seen = failures

    def _process_block(self, block: np.ndarray) -> None:
        """Downmix, resample, window, and process every completed window."""
        self._last_audio = time.monotonic()
        self.metrics.audio_seconds.inc(len(block) / self.source.sample_rate)
        self.metrics.audio_last_sample_ts.set(time.time())
        if self.ring.overruns > self._overruns_seen:
            self.metrics.overruns.inc(self.ring.overruns - self._overruns_seen)
            self.lost_seconds = self.ring.dropped_frames / self.source.sample_rate
            logger.warning("ring buffer overrun: %d audio blocks lost so far", self.ring.overruns)
            self._overruns_seen = self.ring.overruns
        samples = self.resampler.process(self._finite(downmix(block)))
        for window in self.windower.push(self._heard_audio(samples)):
            self._process_window(window)

    def _heard_audio(self, samples: np.ndarray) -> np.ndarray:
        """Model-rate audio on its way to the windower; outputs that keep audio (clip capture) hear it too."""
        for publisher in self.publishers:
            publisher.hear(samples)
        if self.levels is not None:
            self._report_levels(self.levels.hear(samples))
        return samples

    def _report_levels(self, report: LevelReport) -> None:
        """Minute summaries to every output; noise-alert episodes out as events."""
        for summary in report.summaries:
            self._publish_state("level", summary)
        for detection, level in report.alerts:
            self._emit([detection], level)

    def _publish_state(self, kind: str, state: dict) -> None:
        """A state report to every output; one output's failure costs the others nothing."""
        for publisher in self.publishers:
            try:
                publisher.publish_state(kind, state)
            except Exception:  # a state report is never worth the audio thread
                logger.exception("output %s failed on a %s report", publisher.name, kind)

    def _finite(self, samples: np.ndarray) -> np.ndarray:
        """Replace NaN/Inf samples (a broken float source) by silence, so they cost only their own windows."""
        if np.isfinite(samples).all():
            return samples
        self.nonfinite_blocks += 1
        if self.nonfinite_blocks == 1:
            logger.warning("audio contains NaN or infinite samples; they are treated as silence")
        return np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)

    def _flush(self, end_of_stream: bool) -> None:
        """End of stream: the resampler's tail and a last padded window; then end open episodes."""
        if end_of_stream:
            tail = self._heard_audio(self.resampler.flush())
            for window in self.windower.push(tail) + self.windower.flush():
                self._process_window(window)
        now = self.windower.samples_received / self.rate + self.lost_seconds
        self._emit(self.detector.flush(now))
        if self.levels is not None:
            for detection, level in self.levels.flush(self.windower.samples_received / self.rate):
                self._emit([detection], level)

    def _process_window(self, window: Window) -> None:
        """Features, model, metrics, detector and outputs for one window."""
        if self._offered is not None:
            self._swap_model(*self._offered)
        started = time.perf_counter()
        features = self.features(window)  # (1, 1, n_mels, n_frames)
        featured = time.perf_counter()
        scores = self.model.scores(features)[0]  # (n_classes,)
        done = time.perf_counter()
        heard = min(window.start + len(window.samples), self.windower.samples_received)
        now = heard / self.rate + self.lost_seconds
        self._heard = heard
        detections = self.detector.update(scores, now)
        self._observe(scores, done - started)
        if detections:
            self._emit(detections, self.levels.window(window.samples) if self.levels is not None else None)
        if self.on_window is not None:
            self.on_window(
                WindowResult(window, now, scores, featured - started, done - featured, tuple(detections))
            )

    def _swap_model(self, model: OnnxModel, offered_at: float) -> None:
        """Between two windows: put the offered (verified, compatible) model in place of the running one."""
        self._offered = None
        if model.frontend != self.model.frontend:  # same rate and window; mels, FFT or hop may differ
            self.features = StreamingLogMel(model.frontend, self.hop)
        self.detector.thresholds = resolve_thresholds(
            model.labels, self.config.detector.thresholds, model.metadata.thresholds
        )
        old, self.model = self.model, model
        self.model_ref = ModelRef(model.metadata.name, model.metadata.version, model.sha256)
        self._set_model_metrics()
        self.metrics.model_reloads.labels(result="ok").inc()
        logger.info(
            "model swapped at stream %.3f s: %s -> %s %s (%s), %.1f ms after it was offered",
            self.windower.samples_received / self.rate,
            old.sha256[:12],
            model.metadata.name,
            model.metadata.version,
            model.sha256[:12],
            (time.perf_counter() - offered_at) * 1e3,
        )

    def _observe(self, scores: np.ndarray, seconds: float) -> None:
        """Latency, real-time factor and last score per label."""
        self.metrics.inference_latency.observe(seconds)
        self._rtf += RTF_SMOOTHING * (seconds / (self.hop / self.rate) - self._rtf)
        self.metrics.realtime_factor.set(self._rtf)
        for gauge, score in zip(self._score_gauges, scores.tolist(), strict=True):
            gauge.set(score)

    def _emit(self, detections: list[Detection], level: dict | None = None) -> None:
        """Hand each event (with the ``level`` of its window, when metered) to every output in order."""
        for detection in detections:
            event = make_event(detection, self.config.device_id, self.model_ref, self.clock_origin)
            if level is not None:
                event["level"] = dict(level)
            position = getattr(self.source, "position", None)  # FileSource: where in the file it was heard
            if position is not None:
                event["source"] = position(detection.started_at, detection.ended_at)
            for publisher in self.publishers:
                self._publish(publisher, event)
            if detection.kind == "start":
                self.metrics.detections.labels(label=detection.label).inc()
                self.metrics.last_detection_ts.labels(label=detection.label).set(time.time())
            logger.info("%s %s score %.2f", detection.label, detection.kind, detection.score)

    def _publish(self, publisher: Publisher, event: dict) -> None:
        """One output's failure must cost neither detection nor the other outputs their event."""
        try:
            publisher.publish_event(event, self._heard)
        except Exception:
            logger.exception(
                "output %s failed on a %s %s event", publisher.name, event["label"], event["kind"]
            )
