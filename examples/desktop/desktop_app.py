"""The kinema desktop window: prompt and settings, live preview, cancel, save, and a player.

Only kinema.runtime and PySide6 (the QtWidgets part, PySide6-Essentials). Generation runs on
a Python worker thread; it reports through Qt signals, which Qt queues to the UI thread, so
the window keeps repainting and answering clicks while the model runs. The player shows
frames in a QLabel on a QTimer (QtMultimedia is in PySide6-Addons, which this example does
not need); after a save it plays the written file, read back with kinema.runtime.video.read_video.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from kinema.runtime import Cancelled, KinemaError, Pipeline, Video
from kinema.runtime.video.core import read_video

VIEW = 256  # preview and player side, pixels


def to_pixmap(rgb: np.ndarray, width: int) -> QPixmap:
    """A uint8 (H, W, 3) image as a pixmap `width` pixels wide (nearest neighbour: latent cells stay sharp)."""
    h, w, _ = rgb.shape
    # Filled through bits(): the QImage owns its pixels, so no numpy buffer has to outlive it.
    img = QImage(w, h, QImage.Format.Format_RGB888)
    rows = np.frombuffer(img.bits(), np.uint8).reshape(h, img.bytesPerLine())  # lines are 4-byte aligned
    rows[:, : 3 * w] = np.asarray(rgb, np.uint8).reshape(h, 3 * w)
    del rows
    return QPixmap.fromImage(img).scaledToWidth(width, Qt.TransformationMode.FastTransformation)


class Generation(QObject):
    """One `Pipeline.generate` on a worker thread; `cancel()` stops it within one step."""

    step = Signal(int, int, object)  # step index, total steps, preview uint8 (t, h, w, 3) or None
    done = Signal(object)  # Video
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, pipe: Pipeline, prompt: str, settings: dict):
        super().__init__()
        self.pipe, self.prompt, self.settings = pipe, prompt, settings
        self.token = threading.Event()
        self.last_step = -1  # the worker's latest finished step (read from the UI thread)
        self.thread = threading.Thread(target=self._run, name="kinema-generate", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self.token.set()

    def _on_step(self, payload: dict) -> None:
        # The preview is computed here, on the worker; the UI thread only paints it.
        preview = payload["preview"]() if payload["preview"] is not None else None
        self.last_step = payload["step"]
        self.step.emit(payload["step"], payload["total"], preview)

    def _run(self) -> None:
        try:
            video = self.pipe.generate(self.prompt, callback=self._on_step, cancel=self.token, **self.settings)
        except Cancelled:
            self.cancelled.emit()
        except KinemaError as e:
            self.failed.emit(str(e))
        except Exception as e:  # shown in the window rather than lost on a worker thread
            self.failed.emit(f"{type(e).__name__}: {e}")
        else:
            self.done.emit(video)


class Player(QWidget):
    """Plays uint8 frames (T, H, W, 3) at their fps in a QLabel, looping; play/pause and a frame slider."""

    def __init__(self):
        super().__init__()
        self.frames: np.ndarray | None = None
        self.index = 0
        self.view = QLabel("no video yet")
        self.view.setFixedSize(VIEW, VIEW)
        self.view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.play_button = QPushButton("Pause")
        self.play_button.setEnabled(False)
        self.play_button.clicked.connect(self.toggle)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(self.show_frame)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.advance)
        row = QHBoxLayout()
        row.addWidget(self.play_button)
        row.addWidget(self.slider)
        col = QVBoxLayout(self)
        col.addWidget(self.view)
        col.addLayout(row)

    def load(self, frames: np.ndarray, fps: float) -> None:
        self.frames = frames
        self.slider.setRange(0, len(frames) - 1)
        self.slider.setEnabled(True)
        self.play_button.setEnabled(True)
        self.play_button.setText("Pause")
        self.timer.start(max(1, round(1000 / fps)))
        self.show_frame(0)

    def show_frame(self, i: int) -> None:
        if self.frames is None:
            return
        self.index = int(i) % len(self.frames)
        self.view.setPixmap(to_pixmap(self.frames[self.index], VIEW))
        if self.slider.value() != self.index:
            self.slider.setValue(self.index)

    def advance(self) -> None:
        self.show_frame(self.index + 1)

    def toggle(self) -> None:
        if self.timer.isActive():
            self.timer.stop()
            self.play_button.setText("Play")
        else:
            self.timer.start()
            self.play_button.setText("Pause")


class MainWindow(QMainWindow):
    """Prompt, settings, Generate/Cancel/Save, a progress bar, the live preview and the player."""

    def __init__(self, bundle: Path | None = None, prompt: str = ""):
        super().__init__()
        self.setWindowTitle("kinema")
        self.pipe = Pipeline.from_bundle(bundle)  # checks the bundle; graphs open on the first generation
        self.job: Generation | None = None
        self.video: Video | None = None
        self.preview_steps: list[int] = []  # steps whose preview was painted (for tests and curious users)
        v, s = self.pipe.bundle.video, self.pipe.bundle.sampler

        self.prompt = QLineEdit(prompt)
        self.prompt.setPlaceholderText("describe the video")
        self.frames = self._spin(v.frame_multiple + v.frame_offset, v.max_frames, v.frames, v.frame_multiple)
        self.steps = self._spin(1, 200, s["steps"])
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 20.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(s["guidance"])
        self.seed = self._spin(0, 2**31 - 1, 0)
        self.width_box = self._spin(v.min_side, v.max_side, v.width, v.size_multiple)
        self.height_box = self._spin(v.min_side, v.max_side, v.height, v.size_multiple)
        form = QFormLayout()
        form.addRow("Prompt", self.prompt)
        size = QHBoxLayout()
        size.addWidget(self.width_box)
        size.addWidget(QLabel("x"))
        size.addWidget(self.height_box)
        for label, w in (("Frames", self.frames), ("Steps", self.steps), ("Guidance", self.guidance), ("Seed", self.seed)):
            form.addRow(label, w)
        form.addRow("Size", size)

        self.generate_button = QPushButton("Generate")
        self.generate_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button = QPushButton("Save…")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.ask_save)
        buttons = QHBoxLayout()
        for b in (self.generate_button, self.cancel_button, self.save_button):
            buttons.addWidget(b)
        self.progress = QProgressBar()
        self.status = QLabel("ready")
        self.preview = QLabel("preview")
        self.preview.setFixedSize(VIEW, VIEW)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.player = Player()

        views = QHBoxLayout()
        for title, w in (("Live preview (latent)", self.preview), ("Result", self.player)):
            box = QVBoxLayout()
            box.addWidget(QLabel(title))
            box.addWidget(w)
            views.addLayout(box)
        col = QVBoxLayout()
        col.addLayout(form)
        col.addLayout(buttons)
        col.addWidget(self.progress)
        col.addWidget(self.status)
        col.addLayout(views)
        central = QWidget()
        central.setLayout(col)
        self.setCentralWidget(central)

    @staticmethod
    def _spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
        box = QSpinBox()
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setValue(value)
        return box

    def settings(self) -> dict:
        return {
            "frames": self.frames.value(),
            "steps": self.steps.value(),
            "guidance": self.guidance.value(),
            "seed": self.seed.value(),
            "width": self.width_box.value(),
            "height": self.height_box.value(),
        }

    # ------------------------------------------------------------------ generation

    def start(self) -> None:
        if self.job is not None:
            return
        prompt, settings = self.prompt.text(), self.settings()
        try:
            self.pipe.check_inputs(prompt, **settings)  # a bad value is reported at once, on the UI thread
        except KinemaError as e:
            self.status.setText(str(e))
            return
        self.video = None
        self.preview_steps = []
        self.save_button.setEnabled(False)
        self.generate_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, settings["steps"])
        self.progress.setValue(0)
        est = self.pipe.estimate_memory(settings["frames"], settings["height"], settings["width"])
        self.status.setText(f"generating… (about {est['peak'] / 2**20:.0f} MiB)")
        self.job = Generation(self.pipe, prompt, settings)
        self.job.step.connect(self.on_step)
        self.job.done.connect(self.on_done)
        self.job.failed.connect(self.on_failed)
        self.job.cancelled.connect(self.on_cancelled)
        self.job.start()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("cancelling…")

    def on_step(self, step: int, total: int, preview) -> None:
        self.progress.setValue(step + 1)
        self.status.setText(f"step {step + 1}/{total}")
        if preview is not None:
            strip = np.concatenate(list(preview), axis=1)  # latent frames side by side: (h, t*w, 3)
            self.preview.setPixmap(to_pixmap(strip, VIEW))
            self.preview_steps.append(step)

    def _finish(self, text: str) -> None:
        self.job = None
        self.generate_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText(text)

    def on_done(self, video: Video) -> None:
        self.video = video
        self.save_button.setEnabled(True)
        self.player.load(video.frames, video.fps)
        self._finish(f"done: {video.num_frames} frames, {video.width}x{video.height}")

    def on_failed(self, message: str) -> None:
        self._finish(f"failed: {message}")

    def on_cancelled(self) -> None:
        self._finish("cancelled: nothing was kept")

    # ------------------------------------------------------------------ saving

    def ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save video", "kinema.mp4", "MP4 video (*.mp4);;GIF animation (*.gif)")
        if path:
            self.save_to(Path(path))

    def save_to(self, path: Path) -> Path | None:
        """Write the last video (.mp4 or .gif; written to a temporary file, then renamed) and play the file."""
        if self.video is None:
            return None
        try:
            written = self.video.save(path)
            frames, fps = read_video(written)
        except KinemaError as e:
            self.status.setText(f"not saved: {e}")
            return None
        self.player.load(frames, fps or self.video.fps)
        self.status.setText(f"saved {written}")
        return written

    def closeEvent(self, event) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job.thread.join(timeout=5)
        super().closeEvent(event)


def run_app(args) -> int:
    """Show the window; with args.screenshot, generate once, save a PNG of the window and exit."""
    from kinema_desktop import settings_of

    app = QApplication.instance() or QApplication([])
    win = MainWindow(args.bundle, args.prompt)
    for key, value in settings_of(args).items():
        {"frames": win.frames, "steps": win.steps, "guidance": win.guidance, "seed": win.seed,
         "width": win.width_box, "height": win.height_box}[key].setValue(value)
    win.show()
    if args.screenshot is not None:
        win.start()
        if win.job is None:
            print(win.status.text(), file=sys.stderr)
            return 2

        def shoot():  # polled: the window's own slots run first, then the player shows a frame
            if win.job is not None:
                return
            if win.video is None:
                print(win.status.text(), file=sys.stderr)
                app.exit(1)
                return
            win.grab().save(str(args.screenshot))
            app.quit()

        poll = QTimer(win)
        poll.timeout.connect(shoot)
        poll.start(500)
    return app.exec()
